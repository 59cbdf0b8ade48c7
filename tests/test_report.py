"""The README's results section is generated from results/demo and must agree with it."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from mlsp import report


def test_readme_agrees_with_results_demo():
    assert (REPO / "results" / "demo" / "table3.json").exists(), "results/demo is committed with the demo's results"
    assert not report.update_readme("demo", check_only=True), "README.md disagrees with results/demo: run `mlsp readme --profile demo`"


def test_section_changes_when_results_change(tmp_path):
    results = tmp_path / "results"
    (results / "p").mkdir(parents=True)
    record = {"key": "resolution", "metrics": {"pixels_mos_srcc": 0.5, "network_accuracy": 70.0, "majority_accuracy": 60.0}}
    (results / "p" / "resolution.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\nend\n")
    assert report.update_readme("p", readme=readme, results_root=results)
    text = readme.read_text()
    assert "SRCC(pixels, MOS) 0.500 (paper 0.188)" in text and text.startswith("intro") and text.endswith("end\n")
    assert not report.update_readme("p", check_only=True, readme=readme, results_root=results)
    with pytest.raises(ValueError, match="markers"):
        (tmp_path / "plain.md").write_text("no markers")
        report.update_readme("p", readme=tmp_path / "plain.md", results_root=results)


def _write(results, key, metrics, **extra):
    (results / "p").mkdir(parents=True, exist_ok=True)
    (results / "p" / f"{key}.json").write_text(json.dumps({"key": key, "metrics": metrics, **extra}))


def test_section_shows_intervals_where_results_have_them_and_plain_values_where_not(tmp_path):
    results = tmp_path / "results"
    with_interval = {"srcc": 0.6491, "srcc_low": 0.4912, "srcc_high": 0.7733, "plcc": 0.638, "plcc_low": 0.5, "plcc_high": 0.75,
                     "accuracy": 80.77, "accuracy_low": 71.79, "accuracy_high": 88.46, "out_of_range": 3}
    _write(results, "table2", {"features": {"Single-3FC": with_interval}, "finetune": {}}, backbone="b", weights="w")
    _write(results, "table3", {"b": {"Pool-3FC": {"srcc": 0.5, "plcc": 0.4, "accuracy": 70.0, "srcc_low": None, "srcc_high": None}}}, weights="w")
    text = report.results_section("p", results)
    assert "| Single-3FC [features] | 0.649 [0.49, 0.77] | 0.676 | 0.638 [0.50, 0.75] | 0.682 | 80.8% [71.8, 88.5] | 79.3% | 3 |" in text
    assert "| Pool-3FC [b] | 0.500 | 0.756 | 0.400 | 0.757 | 70.0% | 81.7% | – |" in text  # null bounds: no interval shown
    assert "Brackets: 95% percentile bootstrap intervals" in text
    _write(results, "table2", {"features": {"Single-3FC": {"srcc": 0.6491, "plcc": 0.638, "accuracy": 80.77}}}, backbone="b", weights="w")
    _write(results, "table3", {"b": {}}, weights="w")
    plain = report.results_section("p", results)
    assert "| Single-3FC [features] | 0.649 | 0.676 | 0.638 | 0.682 | 80.8% | 79.3% | – |" in plain and "Brackets" not in plain


def test_section_lists_the_claims_when_notebook_07_wrote_them(tmp_path):
    results = tmp_path / "results"
    line = {"claim": "wide features (Pool-3FC) beat narrow (Single-3FC)", "a": "Table 3: Pool-3FC [b]", "b": "Table 3: Single-3FC [b]",
            "difference": -0.123, "low": -0.3, "high": 0.05, "images": 78, "verdict": "not resolved at this size",
            "seeds": 2, "seed_verdicts": "seed 0: not resolved at this size (-0.123); seed 1: contradicted (-0.200)", "note": "the seeds disagree"}
    unrun = {"claim": "fine-tuning beats features for Single-1FC (5)", "a": "Table 2 fine-tuned: Single-1FC (5) [b]", "b": "Table 2 features: Single-1FC (5) [b]",
             "difference": None, "low": None, "high": None, "images": 0, "verdict": "not run", "seeds": 0, "seed_verdicts": "", "note": "Table 2 fine-tuned: Single-1FC (5) [b] not run in this profile"}
    _write(results, "claims", {f"{line['a']} vs {line['b']}": line, "unrun": unrun}, resamples=1000, confidence=0.95)
    text = report.results_section("p", results)
    assert ("| wide features (Pool-3FC) beat narrow (Single-3FC) | Table 3: Pool-3FC [b] | Table 3: Single-3FC [b] | -0.123 | [-0.300, +0.050] | 78 | "
            "2 (seed 0: not resolved at this size (-0.123); seed 1: contradicted (-0.200)) | not resolved at this size; the seeds disagree |") in text
    assert "| – | – | 0 | 0 | not run; Table 2 fine-tuned: Single-1FC (5) [b] not run in this profile |" in text
    assert "1000 resamples" in text
    _write(results, "claims", {})
    assert "claims" not in report.results_section("p", results)


def test_fig7_draws_the_interval_band_when_the_table_has_it():
    table = pd.DataFrame({"blocks": [1, 2, 3], "srcc": [0.5, 0.6, 0.55], "srcc_low": [0.3, 0.45, 0.4], "srcc_high": [0.65, 0.72, 0.7]})
    band = report.srcc_against_blocks(table, "b").axes[0].collections
    assert len(band) == 1 and np.allclose(band[0].get_paths()[0].vertices[:, 1].min(), 0.3)
    assert not report.srcc_against_blocks(table[["blocks", "srcc"]], "b").axes[0].collections


def test_comparison_table_carries_this_runs_interval():
    best = {"label": "Pool-3FC [b]", "source": "s", "note": "n", "srcc": 0.6, "srcc_low": 0.45, "srcc_high": 0.72, "plcc": 0.5, "accuracy": 75.0}
    table = report.comparison_table(best)
    assert table.iloc[-1]["srcc_low"] == 0.45 and np.isnan(table.iloc[-1]["plcc_low"]) and table["srcc_low"].iloc[:-1].isna().all()


def test_failure_grid_finds_images_by_the_path_column_or_avas_layout(tmp_path):
    from PIL import Image

    for relative in ("mine/holiday/beach.png", "ava/images/123.jpg"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / relative)
    with_path = pd.DataFrame({"image_id": ["holiday/beach.png"], "predicted_mos": [3.1], "true_mos": [3.5], "path": [str(tmp_path / "mine/holiday/beach.png")]})
    figure = report.failure_grid(with_path, tmp_path / "no-ava-here", "t")  # any layout: the path column
    assert figure.axes[0].images[0].get_array().shape == (30, 40, 3) and figure.axes[0].get_title() == "3.10 (3.50)"
    older = pd.DataFrame({"image_id": ["123"], "predicted_mos": [6.0], "true_mos": [7.0]})  # tables from before the path column
    assert report.failure_grid(older, tmp_path / "ava", "t").axes[0].images[0].get_array().shape == (30, 40, 3)


def test_section_leaves_the_paper_columns_empty_for_other_data_sets(tmp_path):
    results = tmp_path / "results"
    counts = {"images": 30, "test_images": 6, "unreadable": 0, "score_min": 1.0, "score_max": 5.0, "accuracy_threshold": 3.0}
    _write(results, "data", counts, data_format="koniq10k", data_note="koniq10k labels x")
    _write(results, "table2", {"features": {"Single-3FC": {"srcc": 0.6491, "plcc": 0.638, "accuracy": 80.77}}, "finetune": {}}, backbone="b", weights="w")
    _write(results, "resolution", {"pixels_mos_srcc": 0.5, "network_accuracy": 70.0, "majority_accuracy": 60.0})
    text = report.results_section("p", results)
    assert "| Single-3FC [features] | 0.649 | – | 0.638 | – | 80.8% | – | – |" in text
    assert "MOS on 1-5, accuracy at MOS > 3; paper columns left empty" in text and "paper 0.188" not in text
    _write(results, "data", {**counts, "score_max": 10.0, "accuracy_threshold": 5.0}, data_format="ava")
    assert "| Single-3FC [features] | 0.649 | 0.676 |" in report.results_section("p", results) and "paper 0.188" in report.results_section("p", results)


def test_committed_demo_results_pass_their_own_check():
    """results/demo and params/demo/expected.yaml are committed together: the demo's numbers must lie within
    the tolerances recorded for it (a rerun that moved a number further than other seeds and numerics do
    means the code changed what it computes, and expected.yaml must be recorded again)."""
    from mlsp import check

    rows = check.compare("demo")
    assert len(rows) > 40 and not [row for row in rows if row["status"] != "pass"], check.format_rows([row for row in rows if row["status"] != "pass"])
