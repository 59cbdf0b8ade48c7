"""End-to-end fine-tuning: crops and flips, batches, and one row trained and evaluated."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsp import backbones, experiments, finetune, train
from mlsp.features import RESCALED_SIZE


def where_in(image, view):
    """(top, left, mirrored) of the window of `image` that `view` shows, or None."""
    offsets = range(RESCALED_SIZE - finetune.CROP + 1)
    for mirrored, candidate in ((False, view), (True, view[:, ::-1])):
        for top in offsets:
            for left in offsets:
                if np.array_equal(candidate, image[top : top + finetune.CROP, left : left + finetune.CROP]):
                    return top, left, mirrored
    return None


def test_random_view_is_a_224_crop_or_its_mirror():
    image = np.random.default_rng(0).integers(0, 255, size=(RESCALED_SIZE, RESCALED_SIZE, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    mirrored = 0
    for _ in range(20):
        view = finetune.random_view(image, rng)
        assert view.shape == (finetune.CROP, finetune.CROP, 3)
        found = where_in(image, view)
        assert found is not None
        mirrored += found[2]
    assert 0 < mirrored < 20


def test_batches_are_full_sized_crops_with_their_mos():
    images = np.zeros((5, RESCALED_SIZE, RESCALED_SIZE, 3), dtype=np.uint8)
    batches = finetune.ImageBatches(images, np.arange(5, dtype=np.float32), lambda x: x.astype(np.float32), batch_size=4)
    x, y = batches[1]
    assert x.shape == (4, finetune.CROP, finetune.CROP, 3) and len(y) == 4
    whole, _ = finetune.ImageBatches(images, np.arange(5), lambda x: x, batch_size=2, augment=False)[0]
    assert whole.shape == (2, RESCALED_SIZE, RESCALED_SIZE, 3)


def test_fine_tuning_updates_the_backbone_and_reports_the_row():
    rng = np.random.default_rng(0)
    n = 12
    images = rng.integers(0, 255, size=(n, RESCALED_SIZE, RESCALED_SIZE, 3), dtype=np.uint8)
    metadata = pd.DataFrame({"image_id": [str(i) for i in range(n)], "mos": np.linspace(3, 7, n)})
    split = experiments.Split(metadata, np.arange(8), np.arange(8, 10), np.arange(10, 12))
    row = experiments.Row("Single-1FC (5)", "single_1fc", "rescaled", "narrow", True, last_blocks=5)
    backbone = backbones.load("efficientnet_lite0", "imagenet")
    model = train.compile_head(finetune.finetune_model(backbone, row), train.Protocol(learning_rate=1e-2))
    stem = backbone.model.get_layer("stem_conv").kernel
    before = np.array(stem)
    model.train_on_batch(backbone.preprocess(images[:4, : finetune.CROP, : finetune.CROP]), np.arange(4, dtype=np.float32))
    assert not np.allclose(before, np.array(stem))  # end to end: the first layer learns too

    result = finetune.run_finetune_row(row, lambda: backbones.load("efficientnet_lite0", "imagenet"), images, split, train.Protocol(max_epochs=1, batch_size=4), seed=0, test_crops=2)
    assert result["epochs"] == 1 and result["history"]["learning_rate"] == pytest.approx([1e-4])
    assert result["predicted"].shape == (2,) and np.all(np.isfinite(result["predicted"]))
    assert result["parameters"] == model.count_params()


def test_batches_from_paths_equal_batches_from_memory(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(3):
        path = tmp_path / f"{index}.png"  # lossless, so decoding gives back the same pixels
        Image.fromarray(rng.integers(0, 255, size=(300 + 40 * index, 400, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    in_memory = finetune.load_rescaled(paths)
    assert in_memory.shape == (3, RESCALED_SIZE, RESCALED_SIZE, 3)
    from_memory = finetune.ImageBatches(in_memory, np.arange(3), lambda x: x, batch_size=3, seed=4)[0][0]
    from_disk = finetune.ImageBatches(np.array(paths), np.arange(3), lambda x: x, batch_size=3, seed=4)[0][0]
    np.testing.assert_array_equal(from_memory, from_disk)


def test_fine_tuning_reads_a_csv_data_sets_images_from_their_paths(tmp_path):
    """Notebook 02 feeds fine-tuning data.image_paths(split.metadata, ava_dir): the metadata's path
    column, so images in subfolders of any layout are found, never AVA's images/<id>.jpg."""
    from PIL import Image

    from mlsp import data, labels

    rng = np.random.default_rng(1)
    names = ["holiday/beach.png", "holiday/dunes.png", "city/night/street.png", "city/roof.png", "k5.png"]
    for name in names:
        (tmp_path / "mine" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)).save(tmp_path / "mine" / name)
    labels_file = tmp_path / "labels.csv"
    labels_file.write_text("image,mos,set\n" + "".join(f"{name},{3 + index},{'test' if index == 4 else 'train'}\n" for index, name in enumerate(names)))
    metadata, unreadable, _, _ = labels.read_labelled("csv", labels_file, tmp_path / "mine", data.ScoreScale(1, 10, 5), seed=0, validation_fraction=0.25, progress=False)
    assert unreadable.empty and "path" in metadata.columns
    paths = [str(path) for path in data.image_paths(metadata, tmp_path / "no-ava-here")]  # as notebook 02 does
    assert [Path(path).relative_to(tmp_path / "mine").as_posix() for path in paths] == list(metadata["image_id"])
    in_memory = finetune.load_rescaled(paths)
    from_memory = finetune.ImageBatches(in_memory, metadata["mos"], lambda x: x, batch_size=5, seed=2)[0]
    from_disk = finetune.ImageBatches(np.array(paths), metadata["mos"], lambda x: x, batch_size=5, seed=2)[0]
    np.testing.assert_array_equal(from_memory[0], from_disk[0])
    np.testing.assert_array_equal(from_memory[1], from_disk[1])


def _epochs_through_keras(batches, epochs: int):
    """What fit() sees: the batches of each epoch as Keras' adapter serves them (its worker threads
    when the dataset has workers > 1), with on_epoch_end between epochs."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(batches, shuffle=False)
    served = []
    for _ in range(epochs):
        adapter.on_epoch_begin()
        served.append([x.copy() for x, _ in adapter.get_numpy_iterator()])
        adapter.on_epoch_end()
    return served


def test_parallel_feeding_gives_the_same_batches_for_the_same_seed(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(10):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 255, size=(260 + 10 * index, 300, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    make = lambda workers, seed=7: finetune.ImageBatches(np.array(paths), np.arange(10), lambda x: x, batch_size=3, seed=seed, workers=workers)
    assert make(None).workers == finetune.FEED_WORKERS and finetune.ImageBatches(np.zeros((2, 256, 256, 3), np.uint8), None, lambda x: x).workers == 1
    one_thread, four_threads = _epochs_through_keras(make(1), 2), _epochs_through_keras(make(4), 2)
    assert [len(epoch) for epoch in four_threads] == [4, 4]
    for epoch_one, epoch_four in zip(one_thread, four_threads):
        for a, b in zip(epoch_one, epoch_four):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(one_thread[0][0], one_thread[1][0])  # a new epoch draws new crops and a new order
    assert not np.array_equal(_epochs_through_keras(make(4, seed=8), 1)[0][0], one_thread[0][0])  # and the seed matters
    # a batch depends on (seed, epoch, index) only: asked for out of order, it is the same
    batches = make(1)
    np.testing.assert_array_equal(batches[2][0], (batches[0], batches[2])[1][0])
