"""`mlsp check`: compare a profile's results with params/<profile>/expected.yaml.

expected.yaml is a tree whose first level is a result key (the JSON file's name). Each leaf holds
one or more rules, all of which must hold:
- `value: V, tolerance: T`: the metric lies within V +- T (absolute);
- `interval_contains: V`: the metric's own 95% bootstrap interval over test images (`<metric>_low`,
  `<metric>_high` of the same result) contains V. For a metric that training noise moves by more than
  any useful tolerance at a small profile's size: the run need only be consistent with the recorded one
  given its own uncertainty (tools/record_expected.py uses it only where every recorded run's interval
  contained the recorded value);
- `min: B`: the metric is above B (a sanity bound, such as a correlation above 0).
A metric that no result carries, or a NaN, is a failure.
"""
from __future__ import annotations

import math
from pathlib import Path

import yaml

from mlsp.parameters import ParameterError, profile_dir
from mlsp.paths import PARAMS_DIR, RESULTS_DIR
from mlsp.results import flatten, load_metrics


def compare(profile: str, params_dir: Path = PARAMS_DIR, results_root: Path = RESULTS_DIR) -> list[dict]:
    expected_path = profile_dir(profile, params_dir) / "expected.yaml"
    if not expected_path.exists():
        raise ParameterError(f"{expected_path}: missing (it holds the values `mlsp check` compares against)")
    expected = flatten(yaml.safe_load(expected_path.read_text()) or {})
    got = {}
    for key, record in load_metrics(profile, results_root).items():
        for name, value in flatten(record["metrics"]).items():
            got[f"{key}/{name}"] = value
    rows = []
    for metric, spec in expected.items():
        rules = rules_of(spec)
        if rules is None:
            raise ParameterError(f"{expected_path}: '{metric}' needs 'value' and 'tolerance', 'interval_contains' or 'min' (got {spec!r})")
        value = got.get(metric)
        interval = (got.get(f"{metric}_low"), got.get(f"{metric}_high"))
        rows.append({"metric": metric, "expected": describe(spec), "got": value, "status": judge(spec, value, interval)})
    return rows


def rules_of(spec) -> set | None:
    """The rules a leaf states, or None for a leaf that is not one (a `value` without a `tolerance`)."""
    if not isinstance(spec, dict) or ("value" in spec) != ("tolerance" in spec) or set(spec) - {"value", "tolerance", "interval_contains", "min"}:
        return None
    rules = {rule for rule in ("value", "interval_contains", "min") if rule in spec}
    return rules or None


RECORDED_PRECISION = 5e-5  # half the last decimal tools/record_expected.py writes


def judge(spec: dict, value, interval: tuple) -> str:
    """"pass", "FAIL", or "missing" (the metric, or the interval a rule needs, is absent or NaN)."""
    if not _finite(value):
        return "missing"
    held = []
    if "value" in spec:
        held.append(abs(float(value) - float(spec["value"])) <= float(spec["tolerance"]) + 1e-12)
    if "interval_contains" in spec:
        if not (_finite(interval[0]) and _finite(interval[1])):
            return "missing"
        # expected.yaml holds values rounded to 4 decimals, and accuracy intervals end exactly on whole
        # test images (k/14 = 57.142857...): half a unit of the 4th decimal keeps such an edge inside
        held.append(float(interval[0]) - RECORDED_PRECISION <= float(spec["interval_contains"]) <= float(interval[1]) + RECORDED_PRECISION)
    if "min" in spec:
        held.append(float(value) > float(spec["min"]))
    return "pass" if all(held) else "FAIL"


def _finite(number) -> bool:
    try:
        return number is not None and math.isfinite(float(number))
    except (TypeError, ValueError):
        return False


def describe(spec: dict) -> str:
    parts = []
    if "value" in spec:
        parts.append(f"{float(spec['value']):.4g} +- {float(spec['tolerance']):.3g}")
    if "interval_contains" in spec:
        parts.append(f"interval contains {float(spec['interval_contains']):.4g}")
    if "min" in spec:
        parts.append(f"> {float(spec['min']):.4g}")
    return "; ".join(parts)


def format_rows(rows: list[dict]) -> str:
    width = max([len("metric")] + [len(row["metric"]) for row in rows])
    rule_width = max([len("expected")] + [len(row["expected"]) for row in rows])
    lines = [f"{'metric':<{width}}  {'expected':<{rule_width}}  {'got':>9}  result"]
    for row in rows:
        got = "-" if row["got"] is None else f"{float(row['got']):.4g}"
        lines.append(f"{row['metric']:<{width}}  {row['expected']:<{rule_width}}  {got:>9}  {row['status']}")
    failed = sum(row["status"] != "pass" for row in rows)
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)
