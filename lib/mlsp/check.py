"""`mlsp check`: compare a profile's results with params/<profile>/expected.yaml.

expected.yaml is a tree whose first level is a result key (the JSON file's name) and whose leaves
are `{value: V, tolerance: T}` (absolute). A metric that no result carries is a failure.
"""
from __future__ import annotations

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
        if not isinstance(spec, dict) or "value" not in spec or "tolerance" not in spec:
            raise ParameterError(f"{expected_path}: '{metric}' needs 'value' and 'tolerance'")
        value = got.get(metric)
        if value is None:
            status = "missing"
        else:
            status = "pass" if abs(float(value) - float(spec["value"])) <= float(spec["tolerance"]) + 1e-12 else "FAIL"
        rows.append({"metric": metric, "expected": spec["value"], "got": value, "tolerance": spec["tolerance"], "status": status})
    return rows


def format_rows(rows: list[dict]) -> str:
    width = max([len("metric")] + [len(row["metric"]) for row in rows])
    lines = [f"{'metric':<{width}}  {'expected':>9}  {'got':>9}  {'tol':>6}  result"]
    for row in rows:
        got = "-" if row["got"] is None else f"{float(row['got']):.4g}"
        lines.append(f"{row['metric']:<{width}}  {float(row['expected']):>9.4g}  {got:>9}  {float(row['tolerance']):>6.3g}  {row['status']}")
    failed = sum(row["status"] != "pass" for row in rows)
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)
