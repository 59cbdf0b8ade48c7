"""One bad image never stops extraction, never blocks training, and is not retried forever."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlsp import backbones, experiments, extract, train
from mlsp.store import FAILED, WRITTEN, FeatureReader, FeatureWriter, StoreLocked, failures_path, merge_shards, store_path


@pytest.fixture(scope="module")
def inception():
    return backbones.load("inception_v3", "random")


@pytest.fixture
def photos(tmp_path):
    """Four good photos, one whose 87.5% crops are too small for an Inception, one truncated JPEG."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    sizes = {"good1": (100, 96), "good2": (120, 90), "small": (90, 80), "good3": (96, 100), "good4": (110, 100)}
    for name, (width, height) in sizes.items():
        Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)).save(folder / f"{name}.jpg", quality=95)
    whole = (folder / "good1.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    ids = ["good1", "good2", "small", "truncated", "good3", "good4"]
    return ids, [folder / f"{image_id}.jpg" for image_id in ids]


class CountingExtractor:
    """The real traced network, counting calls, failing on demand for one input shape."""

    def __init__(self, backbone, fail_on_width=None):
        from mlsp.features import mlsp_model, traced

        self.forward = traced(mlsp_model(backbone, ("narrow",)))
        self.fail_on_width, self.calls = fail_on_width, 0

    def __call__(self, batch):
        self.calls += 1
        if batch.shape[2] == self.fail_on_width:
            raise RuntimeError("simulated out of memory\n...pages of graph context...")
        return self.forward(batch)


def test_bad_images_are_marked_failed_and_the_rest_extracted(inception, photos, tmp_path):
    ids, paths = photos
    extractor = CountingExtractor(inception, fail_on_width=round(110 * 0.875))  # good4's crops
    summary = extract.extract(ids, paths, inception, "original", True, ("narrow",), tmp_path / "features", progress=False, extractor=extractor)
    assert summary["extracted"] == 3
    reasons = {item["image_id"]: item["reason"] for item in summary["skipped"]}
    assert set(reasons) == {"small", "truncated", "good4"}
    assert "too small for inception_v3" in reasons["small"] and "79x70" in reasons["small"] and "75 px" in reasons["small"]
    assert str(paths[3]) in reasons["truncated"]
    assert "forward pass failed" in reasons["good4"] and "simulated out of memory" in reasons["good4"] and "graph context" not in reasons["good4"]
    path = store_path(tmp_path / "features", "inception_v3", "original", "narrow", True)
    with FeatureReader(path) as reader:
        assert list(reader.status) == [WRITTEN, WRITTEN, FAILED, FAILED, WRITTEN, FAILED]
        assert set(reader.failure_reasons()) == {"small", "truncated", "good4"}
    assert failures_path(path).exists()

    # a resume neither retries the failed images nor repeats the written ones
    calls = extractor.calls
    again = extract.extract(ids, paths, inception, "original", True, ("narrow",), tmp_path / "features", progress=False, extractor=extractor)
    assert extractor.calls == calls and again["extracted"] == 0 and again["already_done"] == 3
    assert {item["image_id"] for item in again["previously_failed"]} == {"small", "truncated", "good4"}
    assert {item["reason"] for item in again["previously_failed"]} == set(reasons.values())
    table = extract.skipped_table([summary, again])
    assert list(table["when"].value_counts().sort_index()) == [3, 3]

    # retry_failed tries them again: the network no longer fails on good4, so it is written now
    extractor.fail_on_width = None
    retried = extract.extract(ids, paths, inception, "original", True, ("narrow",), tmp_path / "features", progress=False, extractor=extractor, retry_failed=True)
    assert retried["extracted"] == 1 and {item["image_id"] for item in retried["skipped"]} == {"small", "truncated"}
    with FeatureReader(path) as reader:
        assert list(reader.status) == [WRITTEN, WRITTEN, FAILED, FAILED, WRITTEN, WRITTEN]


def test_a_disk_too_small_for_the_stores_is_named_before_anything_is_extracted(inception, photos, tmp_path, monkeypatch):
    ids, paths = photos
    extractor = CountingExtractor(inception)
    monkeypatch.setattr(extract, "free_bytes", lambda folder: 1000)
    with pytest.raises(extract.NotEnoughDisk) as error:
        extract.extract(ids, paths, inception, "original", True, ("narrow",), tmp_path / "features", progress=False, extractor=extractor)
    message = str(error.value)
    store = store_path(tmp_path / "features", "inception_v3", "original", "narrow", True)
    assert message.startswith(f"{store.parent}: the 6 images still to extract need ") and "1e-06 GB free" in message and "a rerun resumes" in message
    assert extractor.calls == 0 and not FeatureReader(store).done.any()
    # the need counts only what is left: with the disk back, a run writes; afterwards nothing is left to need
    monkeypatch.undo()
    extract.extract(ids, paths, inception, "original", True, ("narrow",), tmp_path / "features", progress=False, extractor=extractor)
    monkeypatch.setattr(extract, "free_bytes", lambda folder: 0)
    again = extract.extract(ids, paths, inception, "original", True, ("narrow",), tmp_path / "features", progress=False, extractor=extractor)
    assert again["extracted"] == 0


def test_a_run_whose_later_passes_cannot_fit_stops_before_its_first_pass_writes(inception, photos, tmp_path, monkeypatch):
    ids, paths = photos
    metadata = pd.DataFrame({"image_id": ids, "path": [str(path) for path in paths], "width": 100, "height": 100})
    passes, augmentation = {"rescaled": ["narrow"], "original": ["narrow"]}, (True, False)
    channels = 10_048  # InceptionV3's 11 blocks
    first_pass, run = 6 * 8 * channels * 2, 6 * (8 + 1) * channels * 2 * 2  # float16 bytes: 6 images x views, 4 passes
    monkeypatch.setattr(extract, "free_bytes", lambda folder: 1_000_000)  # the first pass alone fits (its own check passes)
    assert first_pass < 1_000_000 < run
    with pytest.raises(extract.NotEnoughDisk) as error:
        extract.run_extraction(metadata, None, inception, tmp_path / "features", passes, augmentation, progress=False)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'features'}: the 4 passes of this run still have to write {run / 1e9:.3g} GB (24 image-passes; ")
    assert f"the largest, inception_v3 rescaled aug8, {first_pass / 1e9:.3g} GB" in message and "the disk has 0.001 GB free" in message
    assert "work_dir on a larger disk" in message and "a rerun resumes" in message
    assert not (tmp_path / "features").exists()  # not a store made, let alone a feature written


class Widths:
    """What the disk check asks of a backbone: its name and block widths (no network is built)."""

    def __init__(self, name, channels):
        self.name, self.channels = name, channels

    def block_channels(self):
        return [self.channels]


def test_the_up_front_check_sums_what_every_pass_of_every_backbone_still_has_to_write(tmp_path, monkeypatch):
    ids = ["a", "b", "c", "d"]
    small, large = Widths("small", 3), Widths("large", 10)
    passes = {"rescaled": ["narrow"], "original": ["narrow", "wide"]}
    # an earlier run wrote two images of small's rescaled aug8 store and failed one
    with FeatureWriter(store_path(tmp_path, "small", "rescaled", "narrow", True), ids, 8, (3,)) as writer:
        writer.write(0, np.ones((8, 3)))
        writer.write(1, np.ones((8, 3)))
        writer.mark_failed(2, "too small")
    needs = {(need["backbone"], need["mode"], need["augment"]): (need["images"], need["bytes"]) for need in extract.pass_needs(ids, [small, large], tmp_path, passes)}
    assert needs[("small", "rescaled", True)] == (1, 8 * 3 * 2)  # only "d" is left
    assert needs[("small", "original", True)] == (4, 4 * 8 * (3 + 25 * 3) * 2)  # narrow and wide stores of one pass
    assert needs[("large", "original", False)] == (4, 4 * 1 * (10 + 25 * 10) * 2)
    assert len(needs) == 8  # 2 backbones x 2 inputs x 2 augmentations; 8 x 4 images less the 3 done or failed: 29 to extract
    retried = extract.pass_needs(ids, [small, large], tmp_path, passes, retry_failed=True)
    assert retried[0]["images"] == 2  # the failed one too
    total = sum(bytes_ for _, bytes_ in needs.values())
    monkeypatch.setattr(extract, "free_bytes", lambda folder: total)
    assert extract.check_free_space_for_passes(ids, [small, large], tmp_path, passes) == total
    monkeypatch.setattr(extract, "free_bytes", lambda folder: total - 1)
    with pytest.raises(extract.NotEnoughDisk, match=r"the 8 passes of this run still have to write .* \(29 image-passes; the largest, large original aug8, "):
        extract.check_free_space_for_passes(ids, [small, large], tmp_path, passes)


def test_whole_image_view_uses_the_whole_image_limit(inception, photos, tmp_path):
    ids, paths = photos
    summary = extract.extract(ids, paths, inception, "original", False, ("narrow",), tmp_path / "features", progress=False)
    # 90x80 is too small for the 87.5% crops (70x78) but fine as a whole image (>= 75 px)
    assert {item["image_id"] for item in summary["skipped"]} == {"truncated"}


def _metadata(ids, sets):
    votes = {f"votes_{score}": [10] * len(ids) for score in range(1, 11)}
    return pd.DataFrame({"image_id": ids, **votes, "n_votes": 100, "mos": np.linspace(3, 7, len(ids)), "mos_std": 1.0, "width": 100, "height": 100, "set": sets})


def test_training_uses_the_images_with_features_and_lists_the_others(tmp_path):
    ids = [f"{100 + index}" for index in range(12)]
    sets = ["train"] * 6 + ["validation"] * 3 + ["test"] * 3
    metadata_csv = tmp_path / "metadata.csv"
    _metadata(ids, sets).to_csv(metadata_csv, index=False)
    row = experiments.TABLE2_FEATURE_ROWS[3]  # Single-1FC on rescaled narrow, 8 views
    path = store_path(tmp_path / "features", "lite", row.mode, row.kind, row.augment)
    rng = np.random.default_rng(0)
    with FeatureWriter(path, ids, 8, (6,), {"block_boundaries": np.array([0, 2, 6]), "weights": "random"}) as writer:
        for index in range(12):
            if index in (1, 10):  # one train and one test image failed
                writer.mark_failed(index, f"images/{ids[index]}.jpg: too small")
            else:
                writer.write(index, rng.normal(size=(8, 6)))
    stores = experiments.row_stores([row], tmp_path / "features", ["lite"])
    with pytest.raises(ValueError, match="failed extraction"):
        train.load_features(path, rows=np.arange(12))

    split, left_out = experiments.usable_split(metadata_csv, stores)
    assert list(left_out["image_id"]) == ["101", "110"] and list(left_out["set"]) == ["train", "test"]
    assert left_out["reason"].str.contains("too small").all()
    assert 1 not in split.train and 10 not in split.test and len(split.train) == 5 and len(split.test) == 2
    protocol = train.Protocol(max_epochs=2, batch_size=4)
    result = experiments.run_feature_row(row, split, tmp_path / "features", "lite", protocol, seed=0)
    assert len(result["predicted"]) == 2 and np.isfinite(result["predicted"]).all()


def test_pending_images_ask_for_notebook_01_and_empty_sets_are_named(tmp_path):
    ids = ["1", "2", "3", "4"]
    metadata_csv = tmp_path / "metadata.csv"
    _metadata(ids, ["train", "train", "validation", "test"]).to_csv(metadata_csv, index=False)
    path = tmp_path / "features" / "lite" / "store.h5"
    with FeatureWriter(path, ids, 1, (3,)) as writer:
        writer.write(0, np.ones((1, 3)))
    with pytest.raises(RuntimeError, match="not been extracted yet; rerun notebook 01"):
        experiments.usable_split(metadata_csv, [path])
    with FeatureWriter(path, ids, 1, (3,)) as writer:
        writer.write(1, np.ones((1, 3)))
        writer.write(2, np.ones((1, 3)))
        writer.mark_failed(3, "unreadable")
    with pytest.raises(ValueError, match="no test image has features"):
        experiments.usable_split(metadata_csv, [path])


def test_merged_shards_keep_failures_and_their_reasons(tmp_path):
    ids = ["a", "b", "c", "d"]
    shards = []
    for shard in (0, 1):
        path = tmp_path / f"shard{shard}.h5"
        with FeatureWriter(path, ids[shard::2], 1, (2,)) as writer:
            writer.write(0, np.full((1, 2), shard))
            writer.mark_failed(1, f"reason {shard}")
        shards.append(path)
    merged, pending = merge_shards(shards, tmp_path / "merged.h5", ids)
    with FeatureReader(merged) as reader:
        assert pending == 0 and list(reader.status) == [WRITTEN, WRITTEN, FAILED, FAILED]
        assert reader.failure_reasons() == {"c": "reason 0", "d": "reason 1"}


def test_a_store_held_open_elsewhere_is_explained(tmp_path):
    path = tmp_path / "features" / "held.h5"
    FeatureWriter(path, ["a"], 1, (2,)).close()
    holder = textwrap.dedent(
        f"""
        import sys, time, h5py
        handle = h5py.File({str(path)!r}, "r")  # a plain reader, as left open in a notebook
        print("open", flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, env=dict(os.environ, HDF5_USE_FILE_LOCKING="TRUE"))
    try:
        assert process.stdout.readline().strip() == b"open"
        with pytest.raises(StoreLocked) as caught:
            FeatureWriter(path, ["a"], 1, (2,))
        message = str(caught.value)
        assert str(path) in message and "another process has it open" in message and "locking=False" in message
    finally:
        process.kill()
        process.wait()
    FeatureWriter(path, ["a"], 1, (2,)).close()  # once the reader is gone, the writer opens


def test_fig2_is_drawn_from_an_image_that_every_pass_extracted():
    """Notebook 01 draws Fig. 2 after extraction: the rehearsal's panorama (refused, too large to
    decode) listed first among the test images must not fail the notebook at its last cell."""
    metadata = pd.DataFrame({"image_id": ["999006", "100006", "100001"], "set": ["test", "test", "train"]})
    skipped = pd.DataFrame({"image_id": ["999006"] * 8})
    assert list(extract.figure_example(metadata, skipped)["image_id"]) == ["100006"]
    every_test_skipped = pd.DataFrame({"image_id": ["999006", "100006"]})
    assert list(extract.figure_example(metadata, every_test_skipped)["image_id"]) == ["100001"]
    assert extract.figure_example(metadata, pd.DataFrame({"image_id": ["999006", "100006", "100001"]})) is None
    assert list(extract.figure_example(metadata, extract.skipped_table([]))["image_id"]) == ["999006"]
