"""The HDF5 feature store: layout, reads, resume after kill -9, shards."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from conftest import REPO
from mlsp import data, embedded
from mlsp.store import FeatureReader, FeatureWriter, StoreMismatch, UnsupportedLayout, merge_shards, record_offsets, store_path

EXTRACT_SCRIPT = textwrap.dedent(
    """
    import sys
    from mlsp import backbones, data, extract
    ava, features_dir, shard_index, num_shards = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    metadata, _, _ = data.build_metadata(ava, seed=0, validation_fraction=0.25, progress=False)
    ids = list(metadata["image_id"])
    paths = [data.image_path(ava, i) for i in ids]
    import keras
    keras.utils.set_random_seed(0)
    backbone = backbones.load("efficientnet_lite0", "imagenet")
    extract.extract(ids, paths, backbone, "original", True, ("narrow", "wide"), features_dir, shard_index, num_shards, workers=2, progress=False)
    """
)


def run_extraction(ava, features_dir, shard_index=0, num_shards=1, wait=True):
    command = [sys.executable, "-c", EXTRACT_SCRIPT, str(ava), str(features_dir), str(shard_index), str(num_shards)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if wait:
        _, error = process.communicate(timeout=600)
        assert process.returncode == 0, error.decode()[-2000:]
    return process


@pytest.fixture(scope="module")
def ava(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ava")
    embedded.generate(folder, 14, seed=2, min_side=200, max_side=360, problem_cases=False)
    return folder


@pytest.fixture(scope="module")
def reference(ava, tmp_path_factory):
    features_dir = tmp_path_factory.mktemp("reference")
    run_extraction(ava, features_dir)
    return features_dir


def read(features_dir, kind, shard=(0, 1)):
    with FeatureReader(store_path(features_dir, "efficientnet_lite0", "original", kind, True, *shard)) as reader:
        return reader.ids, reader.done, reader.read_all()


def test_layout(reference):
    path = store_path(reference, "efficientnet_lite0", "original", "wide", True)
    with h5py.File(path, "r") as handle:
        assert handle["features"].dtype == np.float16
        assert handle["features"].shape == (14, 8, 5, 5, 1808)
        # one view per chunk: training reads one random view per image, and a chunk of all 8 views
        # made it read 8x the bytes wherever a chunk fits HDF5's 1 MiB chunk cache (benchmarks/store.py)
        assert handle["features"].chunks == (1, 1, 5, 5, 1808)
        assert list(handle.attrs["block_boundaries"])[-1] == 1808
    ids, done, narrow = read(reference, "narrow")
    assert done.all() and narrow.shape == (14, 8, 1808) and np.isfinite(narrow).all()


def test_record_reads_equal_slices(reference):
    with FeatureReader(store_path(reference, "efficientnet_lite0", "original", "narrow", True)) as reader:
        np.testing.assert_array_equal(reader.read_records([5, 2, 9]), reader.read_all()[[5, 2, 9]])
        np.testing.assert_array_equal(reader.read_slice(3, 7), reader.read_all()[3:7])


def test_kill_9_then_resume_equals_an_uninterrupted_run(ava, reference, tmp_path):
    process = run_extraction(ava, tmp_path, wait=False)
    path = store_path(tmp_path, "efficientnet_lite0", "original", "narrow", True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if path.exists():
            try:
                with FeatureReader(path) as reader:  # a lock-free read while the writer runs
                    if 3 <= reader.done.sum() < 14:
                        break
            except OSError:
                pass
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    ids, done, _ = read(tmp_path, "narrow")
    assert 3 <= done.sum() < 14, "the kill should land mid-run"
    run_extraction(ava, tmp_path)  # resume
    for kind in ("narrow", "wide"):
        resumed_ids, resumed_done, resumed = read(tmp_path, kind)
        reference_ids, _, expected = read(reference, kind)
        assert resumed_ids == reference_ids and resumed_done.all()
        np.testing.assert_array_equal(resumed, expected)  # bit-identical to an uninterrupted run (issue 12)


def test_shards_merge_into_the_full_store(ava, reference, tmp_path):
    for shard in (0, 1):
        run_extraction(ava, tmp_path, shard, 2)
    _, _, full = read(reference, "narrow")
    metadata, _, _ = data.build_metadata(ava, seed=0, validation_fraction=0.25, progress=False)
    shards = [store_path(tmp_path, "efficientnet_lite0", "original", "narrow", True, shard, 2) for shard in (0, 1)]
    with FeatureReader(shards[1]) as reader:
        assert reader.ids == list(metadata["image_id"])[1::2]
    merged, missing = merge_shards(shards, tmp_path / "merged.h5", list(metadata["image_id"]))
    assert missing == 0
    with FeatureReader(merged) as reader:
        np.testing.assert_allclose(reader.read_all().astype(np.float32), full.astype(np.float32), atol=2e-3, rtol=2e-3)


def supports_sparse_files(folder) -> bool:
    probe = folder / "sparse.probe"
    with open(probe, "wb") as handle:
        handle.truncate(64 << 20)
    sparse = os.stat(probe).st_blocks * 512 < (1 << 20)
    probe.unlink()
    return sparse


def test_creating_a_store_writes_almost_nothing(tmp_path):
    if not supports_sparse_files(tmp_path):
        pytest.skip(f"{tmp_path}: this file system does not keep sparse files, so unwritten space costs disk anyway")
    path = tmp_path / "store.h5"
    with FeatureWriter(path, [f"i{n}" for n in range(200)], 8, (5, 5, 1808)) as writer:
        assert (writer.status() == 0).all()  # the flags are filled: every image starts pending
    apparent, written = os.stat(path).st_size, os.stat(path).st_blocks * 512
    assert apparent >= 200 * 8 * 25 * 1808 * 2  # ~145 MB: every chunk has its space
    assert written < apparent / 50, f"{written} of {apparent} bytes written at creation: the store was filled"


def test_a_record_never_written_reads_back_while_pending(tmp_path):
    path = tmp_path / "store.h5"
    record = np.arange(8 * 3 * 4, dtype=np.float16).reshape(8, 3, 4)
    with FeatureWriter(path, ["a", "b", "c"], 8, (3, 4)) as writer:
        writer.write(1, record)
    with FeatureReader(path) as reader:
        assert list(reader.pending) == [True, False, True] and list(reader.done) == [False, True, False]
        assert reader.read_records([0, 2]).shape == (2, 8, 3, 4)  # its values are undefined, not an error
        assert reader.read_all().shape == (3, 8, 3, 4)
        np.testing.assert_array_equal(reader.read_records([1])[0], record)


def test_a_store_in_the_layout_before_issue_12_resumes(tmp_path):
    """Stores made before were chunked one image per chunk and zero-filled: they stay readable and
    writable, since neither reading nor writing depends on the chunk shape."""
    path, ids = tmp_path / "old.h5", ["a", "b", "c", "d"]
    rng = np.random.default_rng(0)
    records = rng.standard_normal((4, 8, 2, 2, 6)).astype(np.float16)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", shape=(4, 8, 2, 2, 6), dtype=np.float16, chunks=(1, 8, 2, 2, 6), fillvalue=0)
        handle.create_dataset("done", data=np.array([1, 0, 0, 0], np.uint8))
        handle.create_dataset("image_ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        handle["features"][0] = records[0]
    with FeatureWriter(path, ids, 8, (2, 2, 6)) as writer:
        assert list(writer.done()) == [True, False, False, False]
        for index in np.flatnonzero(~writer.done()):
            writer.write(int(index), records[index])
    with FeatureReader(path) as reader:
        assert reader.done.all() and reader.features.chunks == (1, 8, 2, 2, 6)
        np.testing.assert_array_equal(reader.read_all(), records)
        np.testing.assert_array_equal(np.stack([reader.features[row, 5] for row in range(4)]), records[:, 5])


def test_store_for_other_images_is_refused(tmp_path):
    path = tmp_path / "store.h5"
    with FeatureWriter(path, ["a", "b"], 1, (4,)) as writer:
        writer.write(1, np.ones((1, 4)))
        assert list(writer.done()) == [False, True]
    with pytest.raises(StoreMismatch, match="store.h5"):
        FeatureWriter(path, ["a", "c"], 1, (4,))


class FakeBackbone:
    """What extraction asks of a backbone before it builds a network: its name and block widths."""

    name = "fake"

    def block_channels(self):
        return np.array([3, 5], dtype=np.int64)  # numpy ints, as real backbones give them


def test_stores_of_an_earlier_metadata_csv_are_all_named_before_any_is_written(tmp_path):
    import pandas as pd

    from mlsp import extract

    old = pd.DataFrame({"image_id": ["a", "b", "c"], "path": ["a.jpg", "b.jpg", "c.jpg"], "width": 64, "height": 48})
    passes, augmentation = {"rescaled": ["narrow"], "original": ["narrow", "wide"]}, (True, False)
    for mode, kinds in passes.items():
        for kind in kinds:
            for augment in augmentation:
                shape = (8,) if kind == "narrow" else (5, 5, 8)
                FeatureWriter(store_path(tmp_path, "fake", mode, kind, augment), list(old["image_id"]), 8 if augment else 1, shape).close()
    new = old.iloc[:2]  # notebook 00 rerun on other labels
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.h5")}
    with pytest.raises(StoreMismatch) as refused:
        extract.run_extraction(new, None, FakeBackbone(), tmp_path, passes, augmentation, progress=False)
    message = str(refused.value)
    assert message.startswith("6 of the 6 feature stores to write hold features of other images")
    assert all(f"{path}: made for 3 images, 1 of them not among the 2 wanted" in message for path in before)
    assert "work_dir" in message and "features_dir" not in message and "np.int64" not in message
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.h5")} == before  # nothing touched


def test_a_store_of_another_shape_or_order_says_which_in_plain_numbers(tmp_path):
    from mlsp.store import mismatch

    path = tmp_path / "store.h5"
    FeatureWriter(path, ["a", "b"], 1, (np.int64(4),)).close()
    assert mismatch(path, ["a", "b"], 1, (4,)) is None and mismatch(tmp_path / "absent.h5", ["a"], 1, (4,)) is None
    assert mismatch(path, ["a", "b"], 8, (np.int64(4),)) == f"{path}: features of shape (2, 1, 4), not (2, 8, 4)"
    assert mismatch(path, ["b", "a"], 1, (4,)) == f"{path}: made for the same 2 images in another order"
    with pytest.raises(StoreMismatch, match=r"store.h5: features of shape \(2, 1, 4\), not \(2, 1, 5\); delete it .* or give notebook 01 another work_dir"):
        FeatureWriter(path, ["a", "b"], 1, (np.int64(5),))


# ---------------------------------------------------------------- parallel reads around h5py

READER_COUNTS = (1, 2, 3, 8, 16)


def h5py_records(reader, rows, views) -> np.ndarray:
    """The reference: one record per h5py call, as FeatureBatches read before read_pairs."""
    return np.stack([reader.features[int(row), int(view)] for row, view in zip(rows, views)])


def random_pairs(images: int, views: int, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, images, count), rng.integers(0, views, count)


def store_file(path, features: np.ndarray, **dataset_options):
    """A store file written with h5py directly, for layouts the kit does not make itself."""
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=features, **dataset_options)
        handle.create_dataset("image_ids", data=np.array([str(i) for i in range(len(features))], dtype=object), dtype=h5py.string_dtype())
        handle.create_dataset("done", data=np.ones(len(features), np.uint8))
    return path


def test_parallel_reads_equal_h5py_reads_in_a_sparse_kit_store(tmp_path):
    """Only every third image written: unwritten records (allocated, never written) read the same
    bytes both ways, written ones their features, for any number of reader threads."""
    array = np.random.default_rng(0).normal(size=(23, 8, 3, 3, 7)).astype(np.float16)
    with FeatureWriter(tmp_path / "s.h5", [str(i) for i in range(23)], 8, (3, 3, 7)) as writer:
        for index in range(0, 23, 3):
            writer.write(index, array[index])
    rows, views = random_pairs(23, 8, 200)
    with FeatureReader(tmp_path / "s.h5") as reader:
        assert reader.direct_problem is None  # the kit's own layout is read around h5py, not through it
        expected = h5py_records(reader, rows, views)
        written = rows % 3 == 0
        np.testing.assert_array_equal(expected[written], array[rows[written], views[written]])
        for readers in READER_COUNTS:
            got = reader.read_pairs(rows, views, readers)
            assert got.dtype == np.float16 and got.shape == (200, 3, 3, 7)
            np.testing.assert_array_equal(got, expected)
        assert reader.read_pairs([], [], 4).shape == (0, 3, 3, 7)
        with pytest.raises(IndexError, match="s.h5"):
            reader.read_pairs([23], [0])


@pytest.mark.parametrize("options", [
    {"chunks": (1, 8, 3, 4)},  # one image per chunk: the layout before issue 12
    {"chunks": (2, 3, 3, 4)},  # several records per chunk, partial chunks at both edges
    {},  # contiguous
], ids=["image-per-chunk", "partial-edge-chunks", "contiguous"])
def test_parallel_reads_find_records_inside_chunks_and_contiguous_data(tmp_path, options):
    array = np.random.default_rng(1).normal(size=(7, 8, 3, 4)).astype(np.float16)
    rows, views = random_pairs(7, 8, 120, seed=1)
    with FeatureReader(store_file(tmp_path / "s.h5", array, **options)) as reader:
        assert reader.direct_problem is None
        for readers in READER_COUNTS:
            np.testing.assert_array_equal(reader.read_pairs(rows, views, readers), array[rows, views])


def test_a_record_whose_chunk_was_never_allocated_fails_naming_the_file(tmp_path):
    """h5py's default allocates a chunk when it is first written: the others have no place in the file."""
    array = np.random.default_rng(2).normal(size=(6, 8, 5)).astype(np.float16)
    with h5py.File(tmp_path / "late.h5", "w") as handle:
        features = handle.create_dataset("features", shape=array.shape, dtype=np.float16, chunks=(1, 1, 5))
        features[2] = array[2]
        features[4, 3] = array[4, 3]
        handle.create_dataset("image_ids", data=np.array([str(i) for i in range(6)], dtype=object), dtype=h5py.string_dtype())
        handle.create_dataset("done", data=np.zeros(6, np.uint8))
    with FeatureReader(tmp_path / "late.h5") as reader:
        rows, views = np.array([2, 4, 2, 2]), np.array([0, 3, 7, 5])
        for readers in READER_COUNTS:
            np.testing.assert_array_equal(reader.read_pairs(rows, views, readers), h5py_records(reader, rows, views))
        with pytest.raises(LookupError, match=r"late\.h5.*never written.*image 4 view 2"):
            reader.read_pairs([2, 4], [1, 2], 2)


@pytest.mark.parametrize("options, why", [
    ({"chunks": (1, 1, 3, 4), "compression": "gzip"}, "filtered"),
    ({"chunks": (1, 1, 3, 2)}, "split a record"),
], ids=["compressed", "chunks-split-records"])
def test_a_layout_without_fixed_record_offsets_falls_back_to_h5py_and_says_so(tmp_path, options, why):
    array = np.random.default_rng(3).normal(size=(5, 8, 3, 4)).astype(np.float16)
    rows, views = random_pairs(5, 8, 40, seed=3)
    with FeatureReader(store_file(tmp_path / "odd.h5", array, **options)) as reader:
        assert why in reader.direct_problem
        with pytest.warns(UserWarning, match=rf"odd\.h5.*{why}"):
            got = reader.read_pairs(rows, views, 4)
        np.testing.assert_array_equal(got, array[rows, views])
        with pytest.raises(UnsupportedLayout, match=why):
            record_offsets(reader.features)
