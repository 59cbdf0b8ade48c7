"""Write params/<profile>/expected.yaml from real runs of that profile.

    python tools/record_expected.py PROFILE RESULTS_DIR [RESULTS_DIR ...] [--keep-values] [--note TEXT]

Each metric's expected value is the first run's; its tolerance is twice the largest difference
between that value and any other run, but at least a floor: 0.02 for correlations, one test image's
worth of accuracy (100/N points, plus a little), 0 for counts. With `--keep-values` the values of the
existing expected.yaml stay (they came from earlier real runs) and every given run only widens the
tolerances it falls outside of: for runs on another machine or with other numerics (e.g.
TF_ENABLE_ONEDNN_OPTS=0), whose differences are what a user's machine will show. Only for `demo`,
`smoke` and similar profiles: the paper profile's values come from the paper. Review the diff.

With `--range-only-for-trained` (the rehearsal: random weights, two epochs, a handful of test images)
a metric that training produces carries no signal worth a tolerance, and numerics of another machine
move it anywhere: it is checked only to be present and finite, as the middle of its range with half
the range as tolerance (SRCC and PLCC 0 +- 1, accuracy 50 +- 50). A NaN, a missing row or a failed
notebook still fails. Counts and values computed from the data alone keep their recorded values.
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
    "table2": None,  # None: every row's CHECKED_LEAVES
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


# A row's headline metrics; their intervals, validation loss and out-of-range count follow from them
# and from the same predictions, and are not checked separately.
CHECKED_LEAVES = ("srcc", "plcc", "accuracy")
TRAINED = ("table2/", "table3/", "fig7/", "resolution/network_accuracy")
RANGES = {"srcc": (0.0, 1.0), "plcc": (0.0, 1.0), "accuracy": (50.0, 50.0)}  # (middle, half-width) of each metric's range


def range_of(name: str) -> tuple[float, float] | None:
    """(value, tolerance) spanning the whole range of a trained metric, or None for other metrics."""
    if not name.startswith(TRAINED):
        return None
    leaf = name.rsplit("/", 1)[-1]
    return RANGES["accuracy"] if "accuracy" in leaf else RANGES.get(leaf)


def metrics_of(folder: Path) -> dict:
    found = {}
    for key, wanted in RECORDED.items():
        record = json.loads((folder / f"{key}.json").read_text())
        for name, value in flatten(record["metrics"]).items():
            leaf = name.rsplit("/", 1)[-1]
            if (wanted is None and leaf in CHECKED_LEAVES) or (wanted is not None and name in wanted):
                found[f"{key}/{name}"] = value
    return found


def existing_values(profile: str) -> tuple[dict, dict]:
    """(value, tolerance) per metric name of the profile's current expected.yaml."""
    tree = yaml.safe_load((PARAMS_DIR / profile / "expected.yaml").read_text()) or {}
    flat = flatten(tree)
    return {name: leaf["value"] for name, leaf in flat.items()}, {name: leaf["tolerance"] for name, leaf in flat.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("runs", type=Path, nargs="+", help="results/<profile> folders of real runs (copied aside between runs)")
    parser.add_argument("--keep-values", action="store_true", help="keep the current expected values; the runs only widen tolerances")
    parser.add_argument("--keep-tolerances", action="store_true", help="new values from the first run, but no tolerance narrower than the current one (the code changed the numbers; the machines' spread measured before still holds)")
    parser.add_argument("--note", default="", help="where the runs come from, for the file's header")
    parser.add_argument("--range-only-for-trained", action="store_true", help="trained metrics: only present and within their range (random weights, capped epochs)")
    args = parser.parse_args()
    runs = [metrics_of(folder) for folder in args.runs]
    test_images = int(json.loads((args.runs[0] / "data.json").read_text())["metrics"]["test_images"])
    if args.keep_values:
        reference, kept_tolerance = existing_values(args.profile)
    elif args.keep_tolerances:
        reference, kept_tolerance = runs[0], existing_values(args.profile)[1]
    else:
        reference, kept_tolerance = runs[0], {}
    tree: dict = {}
    spreads = {}
    for name, value in reference.items():
        spreads[name] = max(abs(float(value) - float(run[name])) for run in runs)
        tolerance = max(floor(name, test_images), round(2 * spreads[name] + 1e-4, 4) if spreads[name] else 0.0, kept_tolerance.get(name, 0.0))
        node = tree
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = {"value": round(float(value), 4), "tolerance": tolerance}
        if args.range_only_for_trained and range_of(name) is not None:
            if not all(abs(float(run[name]) - range_of(name)[0]) <= range_of(name)[1] for run in runs):
                raise SystemExit(f"{name}: a run's value lies outside the metric's range: {[run[name] for run in runs]}")
            node[parts[-1]] = {"value": range_of(name)[0], "tolerance": range_of(name)[1]}
            spreads[name] = 0.0
    origin = "the values of earlier real runs, kept; tolerances widened by" if args.keep_values else ("the first of" if not args.keep_tolerances else "the values of the first of")
    if args.keep_tolerances:
        args.note = (args.note + " " if args.note else "") + "Tolerances: at least those of the previous expected.yaml (spreads measured across machines and numerics before)."
    header = (
        f"# Expected values for the {args.profile} profile, recorded by tools/record_expected.py: {origin}\n"
        f"# {len(runs)} real run(s) ({', '.join(str(folder) for folder in args.runs)}).\n"
        + (f"# {args.note}\n" if args.note else "")
        + f"# Tolerance: twice the largest difference from the expected value, at least 0.02 for correlations and\n"
        f"# one test image ({test_images} in all) for accuracies.\n"
        + ("# Trained metrics (Tables 2-3, Fig. 7, the resolution network): random weights and capped epochs, so only\n"
           "# checked to be present and finite: the middle of the metric's range, half the range as tolerance.\n" if args.range_only_for_trained else "")
        + "# Synthetic data: these numbers test the pipeline, not the paper.\n"
    )
    target = PARAMS_DIR / args.profile / "expected.yaml"
    target.write_text(header + yaml.safe_dump(tree, sort_keys=False, width=120))
    widest = max(spreads, key=spreads.get)
    print(f"wrote {target}: {len(reference)} metrics; largest difference {spreads[widest]:.4f} ({widest})")


if __name__ == "__main__":
    main()
