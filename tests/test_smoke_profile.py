"""The whole pipeline: every notebook of the smoke profile through papermill (two at a time, as
`make demo` runs), then `mlsp check`.

It runs with TensorFlow's oneDNN optimisations off (TF_ENABLE_ONEDNN_OPTS=0), a stand-in for another
CPU's numerics, while params/smoke/expected.yaml holds the values of a run with them on: its tolerances
must cover both, or `make test` would fail on a user's machine with nothing wrong (issue 13)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_smoke_profile_end_to_end():
    other_numerics = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    run = subprocess.run([sys.executable, "-m", "mlsp.cli", "run", "--profile", "smoke", "--jobs", "2"], cwd=REPO, capture_output=True, text=True, timeout=1200, env=other_numerics)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for notebook in ("00_data", "03_table3_full_resolution", "07_comparison"):
        assert (REPO / "results" / "smoke" / "notebooks" / f"{notebook}.ipynb").exists()
    check = subprocess.run([sys.executable, "-m", "mlsp.cli", "check", "--profile", "smoke"], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "missing" not in check.stdout
    # the scorer `mlsp score` uses says how it was chosen: Table 3's row by validation loss (issue 13, item 5)
    chosen = json.loads((REPO / "results" / "smoke" / "table3.json").read_text())["best"]
    scorer = json.loads((REPO / "data" / "smoke" / "scorer" / "scorer.json").read_text())
    assert chosen["selected_by"] == "validation_loss" and scorer["selected_by"] == chosen
    assert scorer["trained_on"] == f"smoke: {chosen['label']}"
