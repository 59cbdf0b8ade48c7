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
from mlsp.store import FeatureReader, FeatureWriter, StoreMismatch, merge_shards, store_path

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
        assert handle["features"].chunks == (1, 8, 5, 5, 1808)
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
        np.testing.assert_allclose(resumed.astype(np.float32), expected.astype(np.float32), atol=2e-3, rtol=2e-3)


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


def test_store_for_other_images_is_refused(tmp_path):
    path = tmp_path / "store.h5"
    with FeatureWriter(path, ["a", "b"], 1, (4,)) as writer:
        writer.write(1, np.ones((1, 4)))
        assert list(writer.done()) == [False, True]
    with pytest.raises(StoreMismatch, match="store.h5"):
        FeatureWriter(path, ["a", "c"], 1, (4,))
