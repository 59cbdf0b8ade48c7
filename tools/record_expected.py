"""Write params/<profile>/expected.yaml from two real runs of that profile.

    python tools/record_expected.py PROFILE RESULTS_DIR_RUN_1 RESULTS_DIR_RUN_2 [--test-images N]

Each metric's expected value is the first run's; its tolerance is twice the difference between the
two runs, but at least a floor: 0.02 for correlations, one test image's worth of accuracy (100/N
points, plus a little), 0 for counts. Only for `demo`, `smoke` and similar profiles: the paper
profile's values come from the paper. Review the diff before committing it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from mlsp.paths import PARAMS_DIR
from mlsp.results import flatten

RECORDED = {
    "data": ["images", "test_images", "unreadable", "malformed_rows", "pixels_mos_srcc"],
    "table2": None,  # None: every metric except majority_accuracy
    "table3": None,
    "fig7": None,
    "resolution": ["pixels_mos_srcc", "network_accuracy", "majority_accuracy"],
}


def floor(name: str, test_images: int) -> float:
    leaf = name.rsplit("/", 1)[-1]
    if leaf in ("srcc", "plcc", "pixels_mos_srcc", "pixels_mos_srcc_test"):
        return 0.02
    if "accuracy" in leaf:
        return round(100.0 / test_images + 0.05, 2)
    return 0.0


def metrics_of(folder: Path) -> dict:
    found = {}
    for key, wanted in RECORDED.items():
        record = json.loads((folder / f"{key}.json").read_text())
        for name, value in flatten(record["metrics"]).items():
            leaf = name.rsplit("/", 1)[-1]
            if (wanted is None and leaf != "majority_accuracy") or (wanted is not None and name in wanted):
                found[f"{key}/{name}"] = value
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    first, second = metrics_of(args.first), metrics_of(args.second)
    test_images = int(json.loads((args.first / "data.json").read_text())["metrics"]["test_images"])
    tree: dict = {}
    for name, value in first.items():
        spread = abs(float(value) - float(second[name]))
        tolerance = max(floor(name, test_images), round(2 * spread + 1e-4, 4) if spread else 0.0)
        node = tree
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = {"value": round(float(value), 4), "tolerance": tolerance}
    header = (
        f"# Expected values for the {args.profile} profile, recorded by tools/record_expected.py from two real\n"
        f"# runs ({args.first} and {args.second}). Tolerance: twice the difference between the runs, at\n"
        f"# least 0.02 for correlations and one test image ({test_images} in all) for accuracies.\n"
        "# Synthetic data: these numbers test the pipeline, not the paper.\n"
    )
    target = PARAMS_DIR / args.profile / "expected.yaml"
    target.write_text(header + yaml.safe_dump(tree, sort_keys=False, width=120))
    spreads = {name: abs(float(first[name]) - float(second[name])) for name in first}
    print(f"wrote {target}: {len(first)} metrics; largest run-to-run difference {max(spreads.values()):.4f} ({max(spreads, key=spreads.get)})")


if __name__ == "__main__":
    main()
