"""tools/record_expected.py: tolerances come from the spread of real runs, and a metric too noisy to
check at a profile's size is checked only for its range."""
import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "record_expected.py"
spec = importlib.util.spec_from_file_location("record_expected", TOOL)
record_expected = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record_expected)


def test_tolerance_is_twice_the_widest_run_and_noisy_metrics_fall_back_to_their_range():
    reference = {"table2/features/Single-3FC/srcc": 0.60, "table2/features/Single-3FC/accuracy": 75.0, "fig7/last_5/srcc": -0.17, "data/test_images": 160.0}
    runs = [
        reference,
        {"table2/features/Single-3FC/srcc": 0.63, "table2/features/Single-3FC/accuracy": 74.0, "fig7/last_5/srcc": 0.05, "data/test_images": 160.0},
        {"table2/features/Single-3FC/srcc": 0.59, "table2/features/Single-3FC/accuracy": 77.5, "fig7/last_5/srcc": -0.30, "data/test_images": 160.0},
    ]
    tree, spreads, noisy = record_expected.expected_tree(reference, runs, 160, {}, noisy_above=0.3)
    row = tree["table2"]["features"]["Single-3FC"]
    assert row["srcc"] == {"value": 0.6, "tolerance": pytest.approx(0.0601)}  # 2 x 0.03
    assert row["accuracy"] == {"value": 75.0, "tolerance": pytest.approx(5.0001)}  # 2 x 2.5 points
    assert tree["data"]["test_images"] == {"value": 160.0, "tolerance": 0.0}  # a count: exact
    assert spreads["fig7/last_5/srcc"] == pytest.approx(0.22)
    assert noisy == {"fig7/last_5/srcc": pytest.approx(0.22)}  # 0.44 > 0.3: only present and in [-1, 1]
    assert tree["fig7"]["last_5"]["srcc"] == {"value": 0.0, "tolerance": 1.0}
    again, _, quiet = record_expected.expected_tree(reference, runs[:2], 160, {}, noisy_above=0.5)
    assert not quiet and again["fig7"]["last_5"]["srcc"]["tolerance"] == pytest.approx(0.4401)


def test_kept_tolerances_and_floors_are_never_narrowed():
    reference = {"table3/lite/Pool-3FC/srcc": 0.7, "table3/lite/Pool-3FC/accuracy": 80.0}
    tree, _, _ = record_expected.expected_tree(reference, [reference], 80, {"table3/lite/Pool-3FC/srcc": 0.15})
    assert tree["table3"]["lite"]["Pool-3FC"]["srcc"]["tolerance"] == 0.15
    assert tree["table3"]["lite"]["Pool-3FC"]["accuracy"]["tolerance"] == pytest.approx(1.3)  # one test image of 80


def test_every_variant_changes_a_setting_and_the_first_runs_every_notebook():
    environments = [tuple(sorted(environment.items())) + tuple(arguments) for environment, arguments in record_expected.VARIANTS.values()]
    assert len(set(environments)) == len(environments)
    assert "--from" not in record_expected.VARIANTS["base"][1]


def test_one_run_can_widen_its_tolerances_by_its_own_seed_spread_or_interval(tmp_path):
    import json

    rows = {"features": {"Single-3FC": {"srcc": 0.6, "srcc_low": 0.45, "srcc_high": 0.71, "srcc_seeds_sd": 0.05, "plcc": 0.62, "plcc_low": 0.5, "plcc_high": 0.7, "plcc_seeds_sd": None, "accuracy": 75.0}}}
    records = {"table2": rows, "table3": {}, "fig7": {}, "data": {"images": 10}, "resolution": {}}
    for key, metrics in records.items():
        (tmp_path / f"{key}.json").write_text(json.dumps({"metrics": metrics}))
    spread = record_expected.single_run_spread(tmp_path)
    assert spread == {"table2/features/Single-3FC/srcc": ("seeds", 0.05), "table2/features/Single-3FC/plcc": ("interval", pytest.approx(0.1))}
    reference = record_expected.metrics_of(tmp_path)
    tree, _, _ = record_expected.expected_tree(reference, [reference], 100, {}, own_spread=spread)
    row = tree["table2"]["features"]["Single-3FC"]
    assert row["srcc"]["tolerance"] == pytest.approx(0.1501) and row["plcc"]["tolerance"] == pytest.approx(0.1001)
    assert row["accuracy"]["tolerance"] == pytest.approx(1.05)  # neither: the floor, one test image of 100


def test_a_noisy_metric_keeps_the_sturdier_rules_every_run_bore_out():
    name, other = "fig7/last_5/srcc", "fig7/last_1/srcc"
    reference = {name: 0.40, other: 0.10}
    runs = [reference, {name: -0.10, other: 0.60}, {name: 0.80, other: -0.30}]
    intervals = [
        {name: (0.10, 0.65), other: (-0.20, 0.40)},
        {name: (-0.40, 0.45), other: (0.30, 0.85)},  # other's interval misses 0.10
        {name: (0.55, 0.95), other: (-0.60, 0.05)},  # so does this one; name's misses 0.40
    ]
    tree, _, noisy = record_expected.expected_tree(reference, runs, 100, {}, noisy_above=0.3, intervals=intervals)
    assert set(noisy) == {name, other}
    assert tree["fig7"]["last_5"]["srcc"] == {"value": 0.0, "tolerance": 1.0}  # 0.40 not in (0.55, 0.95): range only
    assert tree["fig7"]["last_1"]["srcc"] == {"value": 0.0, "tolerance": 1.0}
    intervals[2][name] = (0.05, 0.95)
    intervals[1][name] = (0.01, 0.45)
    tree, _, _ = record_expected.expected_tree(reference, runs, 100, {}, noisy_above=0.3, intervals=intervals)
    assert tree["fig7"]["last_5"]["srcc"] == {"value": 0.0, "tolerance": 1.0, "interval_contains": 0.4, "min": 0.0}
    assert record_expected.rules_named(tree, name) == "interval_contains, min"
