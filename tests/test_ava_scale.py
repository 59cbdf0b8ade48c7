"""benchmarks/ava_scale.py at a tiny size: its projections follow from what it measured, and its
output is one parseable figure per line."""
import importlib.util
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

FIGURE = re.compile(r"(measured|projected) ([^:]+): (-?[0-9]+(?:\.[0-9]+)?) (\S+)")


@pytest.fixture(scope="module")
def ava_scale():
    spec = importlib.util.spec_from_file_location("ava_scale", REPO / "benchmarks" / "ava_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ava_scale"] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    yield module
    del sys.modules["ava_scale"]


def parsed(text: str) -> dict:
    """(kind, stage) -> (value, unit); fails on any line that is neither a figure nor a '#' note."""
    figures = {}
    for line in text.splitlines():
        if line.startswith("# "):
            continue
        match = FIGURE.fullmatch(line)
        assert match, f"not a figure line: {line!r}"
        figures[match[1], match[2]] = (float(match[3]), match[4])
    return figures


def test_number_has_three_significant_digits_and_no_exponent(ava_scale):
    assert [ava_scale.number(value) for value in (0, 1234567.8, 41.23, 0.0004567, -2.5)] == ["0", "1234568", "41.2", "0.000457", "-2.50"]


def test_metadata_and_store_stages_project_what_they_measured(ava_scale, tmp_path):
    stream = io.StringIO()
    report = ava_scale.Report(stream)
    pool = ava_scale.make_pool(tmp_path / "pool", 6, seed=0)
    times = ava_scale.metadata_stage(tmp_path, 30, pool, {"validation_fraction": 0.05, "verify_images": True}, report, full_rows=3000)
    # the real InceptionResNetV2 wide shape (no network needed: creation is sparse, so cheap) and a small one
    specs = ava_scale.paper_stores(
        {"backbones": ["inception_resnet_v2"], "passes": {"original": ["narrow", "wide"]}, "augmentation": [True, False]},
        {"inception_resnet_v2": 16928},
    )
    stores = ava_scale.store_stage(specs, tmp_path, 20, report, written_rows=3)
    figures = parsed(stream.getvalue())
    assert figures == {key: (pytest.approx(float(ava_scale.number(value)), rel=1e-9), unit) for key, (value, unit) in report.figures.items()}

    projected = figures["projected", "metadata header reads and verification for AVA"][0]
    assert projected == pytest.approx(times["verified"] * ava_scale.AVA_ROWS / 30 / 60, rel=5e-3)
    assert figures["projected", "metadata stage for AVA (verify_images true)"][0] == projected

    assert len(stores) == 4 and not list((tmp_path / "features").rglob("*.h5"))  # measured, then removed
    for spec in specs:
        result = stores[spec.name]
        assert result["record_bytes"] == spec.views * int(np.prod(spec.feature_shape)) * 2  # float16, from the dataset read back
        assert result["features_ava"] == ava_scale.AVA_ROWS * result["record_bytes"]
        assert result["logical_ava"] > result["features_ava"]  # plus the chunk index, ids and flags
        assert result["disk"] < 20 * result["record_bytes"]  # sparse at creation: the features cost no disk yet
        assert abs(result["disk_per_record"] - result["record_bytes"]) <= 4096  # a written record fills its blocks
        logical_gb = figures["projected", f"store {spec.name} logical size for AVA"][0]
        assert logical_gb == pytest.approx(result["logical_ava"] / 1e9, rel=5e-3)
    wide = stores["inception_resnet_v2/original_wide_aug8"]
    assert wide["features_ava"] == 255_530 * 8 * 5 * 5 * 16928 * 2  # the design notes' ~1.7 TB
    total = figures["projected", "stores all logical size for AVA"][0]
    assert total == pytest.approx(sum(result["logical_ava"] for result in stores.values()) / 1e12, rel=5e-3)


def test_flop_count_and_training_reads(ava_scale, tmp_path):
    import keras

    inputs = keras.Input(shape=(None, None, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(inputs)
    x = keras.layers.Conv2D(6, (1, 3), padding="same")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    # 8x8 -> 6x6x4 (3x3x3 kernel) -> 6x6x6 (1x3x4) -> 6x6x2 (dense on 6 channels at each position), 2 FLOPs per multiply-add
    by_hand = 2 * (36 * 4 * 27 + 36 * 6 * 12 + 36 * 2 * 6)
    assert ava_scale.count_flops(model, (8, 8, 3)) == by_hand
    assert ava_scale.count_flops(model, (10, 8, 3)) == 2 * (48 * 4 * 27 + 48 * 6 * 12 + 48 * 2 * 6)

    stream = io.StringIO()
    report = ava_scale.Report(stream)
    spec = ava_scale.StoreSpec("net", "original", "wide", True, 8, (5, 5, 16))
    results = ava_scale.read_write_stage([spec], tmp_path, 40, report, batch_size=16, epochs=2)
    result = results["net", "wide"]
    assert result["rows"] == 40 and result["read_images_per_s"] > 0 and result["write_mbps"] > 0
    figures = parsed(stream.getvalue())
    epoch = figures["projected", "epoch reads net/original_wide_aug8 for AVA"]
    assert epoch == (pytest.approx(ava_scale.AVA_TRAINABLE / result["read_images_per_s"] / 60, rel=5e-3), "min")


def test_an_evicted_store_is_read_from_the_disk(ava_scale, tmp_path):
    """--large reads must come from the disk, not from the pages the fill left cached."""
    if not hasattr(ava_scale.os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this system")
    mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    point, kind = max((mount for mount in mounts if str(tmp_path).startswith(mount[0].rstrip("/") + "/")), key=lambda mount: len(mount[0]))
    if kind in ("tmpfs", "ramfs"):
        pytest.skip(f"{tmp_path} is on {kind} ({point}): memory, no disk to read from")
    path = tmp_path / "store.bin"
    path.write_bytes(np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8).tobytes())
    path.read_bytes()  # now cached
    before = ava_scale.io_counters()["read_bytes"]
    path.read_bytes()
    cached = ava_scale.io_counters()["read_bytes"] - before
    assert ava_scale.evict_from_page_cache(path)
    before = ava_scale.io_counters()["read_bytes"]
    path.read_bytes()
    evicted = ava_scale.io_counters()["read_bytes"] - before
    assert cached < (1 << 20) and evicted >= (7 << 20)
