"""The paper's own path, rehearsed on every CI run: the `rehearsal` profile is the `paper` profile
with an AVA-shaped synthetic set, random weights and capped epochs (params/rehearsal/common.yaml).
Both Inceptions at AVA's sizes, every notebook, all rows of Tables 2-3, Fig. 7's k = 1..11, features
read from HDF5, fine-tuning reading images from disk, batches of 128 and 32, 20 test crops."""
import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import REPO
from mlsp import data as data_layer, embedded

RESULTS = REPO / "results" / "rehearsal"
BUDGET_SECONDS = 12 * 60  # issue 12: the rehearsal within 12 minutes on 2 CPU cores
# The planted panorama must meet the default limits, which refuse it: raised ones (README: for genuine
# large photos) would send 120 MP through IRv2 and fail the skip assertions, or the machine's memory.
DEFAULT_LIMITS = {name: value for name, value in os.environ.items() if name not in ("MLSP_MAX_DECODE_GIB", "MLSP_MAX_PIXELS")}


@pytest.mark.slow
def test_rehearsal_runs_the_paper_settings_end_to_end():
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "mlsp.cli", "run", "--profile", "rehearsal", "--jobs", "2"], cwd=REPO, capture_output=True, text=True, timeout=1800, env=DEFAULT_LIMITS)
    seconds = time.perf_counter() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(f"rehearsal: {seconds:.0f} s (budget {BUDGET_SECONDS} s on 2 cores)")
    check = subprocess.run([sys.executable, "-m", "mlsp.cli", "check", "--profile", "rehearsal"], cwd=REPO, capture_output=True, text=True, env=DEFAULT_LIMITS)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "missing" not in check.stdout

    paper = {name: yaml.safe_load((REPO / "params" / "paper" / name).read_text()) for name in ("02_table2_rescaled.yaml", "03_table3_full_resolution.yaml")}
    table2, table3 = json.loads((RESULTS / "table2.json").read_text()), json.loads((RESULTS / "table3.json").read_text())
    # the paper's settings really reached the notebooks: HDF5 feeding, images from disk, 20 crops, 128 and 32
    assert table2["parameters"]["in_memory"] is False and table2["parameters"]["finetune_images_in_memory"] is False
    assert table2["parameters"]["test_crops"] == 20 and table2["parameters"]["batch_size"] == 128 and table2["parameters"]["finetune_batch_size"] == 32
    assert table3["parameters"]["in_memory"] is paper["03_table3_full_resolution.yaml"]["in_memory"] is False
    # every result says how it differs from the paper: the data, the weights, the epochs
    for record in (table2, table3):
        assert record["differs_from_paper"]["01_extract_features"]["weights"] == {"paper": "imagenet", "here": "random"}
        assert record["differs_from_paper"]["00_data"]["embedded_shape"]["here"] == "ava"
    # both Inceptions, all rows; Pool-3FC on IRv2's 5x5x16,928 wide features is the paper's 63.8 M parameters
    rows = pd.read_csv(RESULTS / "table3.csv")
    assert set(rows["backbone"]) == {"inception_v3", "inception_resnet_v2"}
    pool = rows[(rows["backbone"] == "inception_resnet_v2") & (rows["row"] == "Pool-3FC")]
    assert len(pool) == 1 and int(pool["parameters"].iloc[0]) == 63_828_481
    single = rows[(rows["backbone"] == "inception_resnet_v2") & (rows["row"] == "Single-3FC")]
    assert int(single["parameters"].iloc[0]) == 37_044_737  # the authors' released narrow head (issue 14)
    assert len(pd.read_csv(RESULTS / "fig7.csv")) == 11
    # the planted oddities: usable ones read, unusable ones reported by notebook 00
    data = json.loads((RESULTS / "data.json").read_text())["metrics"]
    assert data["unreadable"] >= 1 and data["malformed_rows"] >= 1
    # equal sizes exist among the images extracted at full resolution, so batch_images batches some
    metadata = data_layer.read_metadata(REPO / "data" / "rehearsal" / "metadata.csv")
    assert metadata[["width", "height"]].duplicated().any()
    # the panorama that notebook 00 accepts (DATA_CARD.md) is skipped by extraction in each of the 2 x 4
    # passes, with its reason; every other image is extracted, and Table 3 leaves it out
    assert embedded.PANORAMA_ID in set(metadata["image_id"])
    skipped = data_layer.read_csv_with_ids(RESULTS / "extraction_skipped.csv")
    assert list(skipped["image_id"]) == [embedded.PANORAMA_ID] * 8  # "this run", or "earlier run" when resumed
    assert skipped["reason"].str.contains("decoding it would take about 1.2 GiB of memory (30000x4000 pixels", regex=False).all()
    passes = pd.read_csv(RESULTS / "extraction.csv")
    assert len(passes) == 8 and (passes["skipped"] + passes["failed earlier"] == 1).all()
    assert (passes["extracted"] + passes["already done"] == len(metadata) - 1).all()
    assert json.loads((RESULTS / "extraction.json").read_text())["metrics"]["skipped"] == 8
    assert set(data_layer.read_csv_with_ids(RESULTS / "table3_left_out.csv")["image_id"]) == {embedded.PANORAMA_ID}
