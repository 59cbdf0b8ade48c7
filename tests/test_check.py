"""`mlsp check`: pass, fail, missing."""
import json

import pytest

from mlsp.check import compare, format_rows
from mlsp.results import Run


def _profile(tmp_path, expected: str):
    """(params dir, results root) of a profile "p" whose expected.yaml is `expected`."""
    params, results = tmp_path / "params", tmp_path / "results"
    (params / "p").mkdir(parents=True, exist_ok=True)
    (params / "p" / "expected.yaml").write_text(expected)
    return params, results


@pytest.fixture
def profile_dirs(tmp_path):
    return _profile(
        tmp_path,
        "table3:\n  model:\n    Pool-3FC:\n      srcc: {value: 0.75, tolerance: 0.01}\n      accuracy: {value: 81.7, tolerance: 0.5}\n"
        "resolution:\n  pixels_mos_srcc: {value: 0.188, tolerance: 0.01}\n",
    )


def test_pass_fail_and_missing(profile_dirs):
    params, results = profile_dirs
    run = Run("p", "03_table3_full_resolution", results_root=results)
    run.save_metrics("table3", {"model": {"Pool-3FC": {"srcc": 0.755, "accuracy": 80.0}}})
    rows = {row["metric"]: row for row in compare("p", params, results)}
    assert rows["table3/model/Pool-3FC/srcc"]["status"] == "pass"
    assert rows["table3/model/Pool-3FC/accuracy"]["status"] == "FAIL"
    assert rows["resolution/pixels_mos_srcc"]["status"] == "missing"
    text = format_rows(list(rows.values()))
    assert "1 passed, 2 failed" in text


def test_result_json_records_the_run(profile_dirs, tmp_path):
    _, results = profile_dirs
    run = Run("p", "05_resolution_baseline", namespace={"seed": 7, "epochs": 3, "unrelated": 1}, results_root=results)
    record = json.loads(run.save_metrics("resolution", {"pixels_mos_srcc": 0.2}).read_text())
    assert record["parameters"] == {"seed": 7, "epochs": 3} and record["seed"] == 7
    assert {"keras", "numpy", "python"} <= set(record["versions"]) and record["wall_time_s"] >= 0
    assert "git_commit" in record


def test_interval_and_sanity_rules(tmp_path):
    params, results = _profile(
        tmp_path,
        "fig7:\n"
        "  last_1:\n    srcc: {value: 0.0, tolerance: 1.0, interval_contains: 0.3, min: 0.0}\n"
        "  last_2:\n    srcc: {value: 0.0, tolerance: 1.0, interval_contains: 0.3}\n"
        "  last_4:\n    srcc: {min: 0.0}\n"
        "  last_8:\n    srcc: {interval_contains: 0.3}\n"
    )
    run = Run("p", "04_fig7_block_ablation", results_root=results)
    run.save_metrics("fig7", {
        "last_1": {"srcc": 0.1, "srcc_low": -0.2, "srcc_high": 0.4},   # contains 0.3, above 0: pass
        "last_2": {"srcc": 0.1, "srcc_low": -0.2, "srcc_high": 0.25},  # misses 0.3: FAIL
        "last_4": {"srcc": -0.05},                                       # below the sanity bound: FAIL
        "last_8": {"srcc": 0.35},                                        # no interval to test: missing
    })
    rows = {row["metric"]: row for row in compare("p", params, results)}
    assert [rows[f"fig7/last_{k}/srcc"]["status"] for k in (1, 2, 4, 8)] == ["pass", "FAIL", "FAIL", "missing"]
    assert rows["fig7/last_1/srcc"]["expected"] == "0 +- 1; interval contains 0.3; > 0"
    assert "1 passed, 3 failed" in format_rows(list(rows.values()))


def test_an_interval_ending_exactly_on_the_rounded_value_contains_it(tmp_path):
    """expected.yaml holds 4 decimals; an accuracy interval over 14 test images ends on 800/14 = 57.142857..."""
    from mlsp.check import judge

    assert judge({"interval_contains": 57.1429}, 60.0, (50.0, 800 / 14)) == "pass"
    assert judge({"interval_contains": 57.1429}, 60.0, (50.0, 57.1427)) == "FAIL"
    assert judge({"interval_contains": 64.2857}, 70.0, (900 / 14, 100.0)) == "pass"


def test_a_nan_metric_and_a_leaf_without_its_tolerance_are_reported(tmp_path):
    from mlsp.parameters import ParameterError

    params, results = _profile(tmp_path, "fig7:\n  last_1:\n    srcc: {min: 0.0}\n")
    Run("p", "04_fig7_block_ablation", results_root=results).save_metrics("fig7", {"last_1": {"srcc": float("nan")}})
    assert compare("p", params, results)[0]["status"] == "missing"
    (params / "p" / "expected.yaml").write_text("fig7:\n  last_1:\n    srcc: {value: 0.5}\n")
    with pytest.raises(ParameterError, match="fig7/last_1/srcc"):
        compare("p", params, results)
