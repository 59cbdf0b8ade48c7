"""Write params/<profile>/expected.yaml from real runs of that profile.

    python tools/record_expected.py PROFILE RESULTS_DIR [RESULTS_DIR ...] [--keep-values] [--note TEXT]
    python tools/record_expected.py PROFILE --vary [--variants base,onednn_off,...] [--noisy-above 0.3]

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

With `--vary` the tool makes the runs itself, one after the other (VARIANTS): the profile as
`make demo` runs it, then with TensorFlow's oneDNN optimisations off, on one thread, one notebook at a
time, and with two other training seeds (notebooks 02 onwards, on the first run's data and features).
Tolerances then come from what other numerics and other seeds do to each number, which is what
another machine will do to it, not from two identical runs. A metric whose tolerance would exceed
`--noisy-above` (correlations; accuracies scaled to percent) is too noisy at this size to check
usefully: it is checked to be present and within its range, and, where every run bears them out,
by two sturdier rules (mlsp.check): `interval_contains` (the run's own 95% bootstrap interval contains
the expected value: it holds in every recorded run, so a run on another machine that fails it differs
by more than its own uncertainty allows) and `min: 0` for a correlation whose interval lay above 0 in
every run (the row finds some signal, whatever the seed). The header lists each such metric with its
measured spread and the rules it kept.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from mlsp.paths import PARAMS_DIR, RESULTS_DIR
from mlsp.results import flatten

# name -> (environment, `mlsp run` arguments); each a setting that moves numbers on another machine
VARIANTS = {
    "base": ({}, ["--jobs", "2"]),
    "onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, ["--jobs", "2"]),
    "one_thread": ({"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}, ["--jobs", "2"]),
    "jobs_1": ({}, ["--jobs", "1"]),
    "seed_1": ({}, ["--jobs", "2", "--from", "02", "--set", "seed=1"]),
    "seed_2": ({}, ["--jobs", "2", "--from", "02", "--set", "seed=2"]),
}

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


def intervals_of(folder: Path) -> dict:
    """Per checked metric of one run, its 95% bootstrap interval (low, high) where the result has one."""
    intervals = {}
    for key, wanted in RECORDED.items():
        flat = flatten(json.loads((folder / f"{key}.json").read_text())["metrics"])
        for name in flat:
            leaf = name.rsplit("/", 1)[-1]
            low, high = flat.get(f"{name}_low"), flat.get(f"{name}_high")
            if ((wanted is None and leaf in CHECKED_LEAVES) or (wanted is not None and name in wanted)) and low is not None and high is not None:
                intervals[f"{key}/{name}"] = (float(low), float(high))
    return intervals


def sturdier_rules(name: str, value: float, intervals: list[dict]) -> dict:
    """The rules a noisy metric keeps besides its range: `interval_contains` where every run's interval
    contained the recorded value, `min: 0` for a correlation whose every interval lay above 0."""
    runs = [interval.get(name) for interval in intervals]
    if not runs or any(run is None or run != run for run in runs):
        return {}
    rules = {}
    recorded = round(float(value), 4)
    if all(low <= recorded <= high for low, high in runs):
        rules["interval_contains"] = recorded
    if "accuracy" not in name.rsplit("/", 1)[-1] and all(low > 0 for low, _ in runs):
        rules["min"] = 0.0
    return rules


def single_run_spread(folder: Path) -> dict:
    """Per checked metric of one run, the spread its own results show: the standard deviation over
    training seeds where the row was trained with several (`<metric>_seeds_sd`), else half the width of
    its bootstrap interval (`<metric>_low`, `<metric>_high`). Metrics with neither are left out."""
    spread = {}
    for key, wanted in RECORDED.items():
        flat = flatten(json.loads((folder / f"{key}.json").read_text())["metrics"])
        for name in flat:
            leaf = name.rsplit("/", 1)[-1]
            if not ((wanted is None and leaf in CHECKED_LEAVES) or (wanted is not None and name in wanted)):
                continue
            seeds_sd, low, high = flat.get(f"{name}_seeds_sd"), flat.get(f"{name}_low"), flat.get(f"{name}_high")
            if seeds_sd is not None and seeds_sd == seeds_sd:  # not NaN/None: several seeds
                spread[f"{key}/{name}"] = ("seeds", float(seeds_sd))
            elif low is not None and high is not None:
                spread[f"{key}/{name}"] = ("interval", (float(high) - float(low)) / 2)
    return spread


def run_variants(profile: str, names: list[str], scratch: Path) -> list[Path]:
    """Run the profile once per variant (the first must run every notebook), copying results/<profile>
    aside after each (executed notebooks and figures too); returns the copies, in order. A variant that runs every notebook starts from an
    empty work_dir, so that its features are extracted under its own numerics."""
    work_dir = yaml.safe_load((PARAMS_DIR / profile / "common.yaml").read_text()).get("work_dir", f"data/{profile}")
    copies = []
    for name in names:
        environment, arguments = VARIANTS[name]
        if "--from" not in arguments:  # a variant of every notebook extracts afresh: numerics move features too
            shutil.rmtree(RESULTS_DIR.parent / work_dir, ignore_errors=True)
        command = [str(Path(sys.executable).with_name("mlsp")), "run", "--profile", profile, *arguments]
        print(f"variant {name}: {' '.join(f'{k}={v}' for k, v in environment.items())} {' '.join(command[1:])}", flush=True)
        subprocess.run(command, env={**os.environ, **environment}, check=True)
        copy = scratch / name
        shutil.copytree(RESULTS_DIR / profile, copy)  # whole: the first variant's is the profile as `make demo` runs it, fit to commit
        copies.append(copy)
    return copies


def existing_values(profile: str) -> tuple[dict, dict]:
    """(value, tolerance) per metric name of the profile's current expected.yaml."""
    tree = yaml.safe_load((PARAMS_DIR / profile / "expected.yaml").read_text()) or {}
    flat = flatten(tree)
    return {name: leaf["value"] for name, leaf in flat.items()}, {name: leaf["tolerance"] for name, leaf in flat.items()}


def expected_tree(reference: dict, runs: list[dict], test_images: int, kept_tolerance: dict, noisy_above: float | None = None, range_only: bool = False, own_spread: dict | None = None, intervals: list[dict] | None = None) -> tuple[dict, dict, dict]:
    """(expected.yaml's tree, each metric's largest difference from its expected value over the runs,
    the metrics found too noisy): see the module's description. `own_spread` (single_run_spread of
    the first run) widens each tolerance to at least 3 standard deviations over seeds, or to the
    half-width of the metric's bootstrap interval where it was trained once. `intervals` (intervals_of
    each run, in the order of `runs`) gives a noisy metric its sturdier rules (sturdier_rules)."""
    tree: dict = {}
    spreads, noisy = {}, {}
    own_spread = own_spread or {}
    for name, value in reference.items():
        spreads[name] = max(abs(float(value) - float(run[name])) for run in runs)
        kind, amount = own_spread.get(name, ("", 0.0))
        own = round(3 * amount + 1e-4, 4) if kind == "seeds" else round(amount + 1e-4, 4) if kind == "interval" else 0.0
        tolerance = max(floor(name, test_images), round(2 * spreads[name] + 1e-4, 4) if spreads[name] else 0.0, kept_tolerance.get(name, 0.0), own)
        node = tree
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = {"value": round(float(value), 4), "tolerance": tolerance}
        scaled = tolerance / 100 if "accuracy" in parts[-1] else tolerance
        if noisy_above is not None and range_of(name) is not None and scaled > noisy_above:
            noisy[name] = spreads[name]
            node[parts[-1]] = {"value": range_of(name)[0], "tolerance": range_of(name)[1], **sturdier_rules(name, value, intervals or [])}
        if range_only and range_of(name) is not None:
            if not all(abs(float(run[name]) - range_of(name)[0]) <= range_of(name)[1] for run in runs):
                raise SystemExit(f"{name}: a run's value lies outside the metric's range: {[run[name] for run in runs]}")
            node[parts[-1]] = {"value": range_of(name)[0], "tolerance": range_of(name)[1]}
            spreads[name] = 0.0
    return tree, spreads, noisy


def rules_named(tree: dict, name: str) -> str:
    node = tree
    for part in name.split("/"):
        node = node[part]
    kept = [rule for rule in ("interval_contains", "min") if rule in node]
    return ", ".join(kept) if kept else "range only: some run's interval missed the recorded value"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("runs", type=Path, nargs="*", help="results/<profile> folders of real runs (copied aside between runs)")
    parser.add_argument("--vary", action="store_true", help="make the runs: one per variant (VARIANTS), the first running every notebook")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--own-spread", action="store_true", help="one run that measured its own spread: tolerances of at least 3 sd over its training seeds, or its bootstrap half-width for rows trained once")
    parser.add_argument("--noisy-above", type=float, default=None, help="metrics whose tolerance would exceed this (correlation units; accuracy in percent / 100) are checked only for presence and range")
    parser.add_argument("--keep-values", action="store_true", help="keep the current expected values; the runs only widen tolerances")
    parser.add_argument("--keep-tolerances", action="store_true", help="new values from the first run, but no tolerance narrower than the current one (the code changed the numbers; the machines' spread measured before still holds)")
    parser.add_argument("--note", default="", help="where the runs come from, for the file's header")
    parser.add_argument("--range-only-for-trained", action="store_true", help="trained metrics: only present and within their range (random weights, capped epochs)")
    args = parser.parse_args()
    if args.vary:
        names = args.variants.split(",")
        unknown = [name for name in names if name not in VARIANTS]
        if unknown or "--from" in VARIANTS[names[0]][1]:
            parser.error(f"--variants: unknown {unknown}, or a first variant that does not run every notebook ({names[0]})")
        args.runs = run_variants(args.profile, names, Path(tempfile.mkdtemp(prefix=f"record-{args.profile}-")))
        args.note = (args.note + " " if args.note else "") + f"Runs: the variants {', '.join(names)} (tools/record_expected.py VARIANTS), in that order."
    if not args.runs:
        parser.error("give results folders of real runs, or --vary")
    runs = [metrics_of(folder) for folder in args.runs]
    intervals = [intervals_of(folder) for folder in args.runs]
    test_images = int(json.loads((args.runs[0] / "data.json").read_text())["metrics"]["test_images"])
    if args.keep_values:
        reference, kept_tolerance = existing_values(args.profile)
    elif args.keep_tolerances:
        reference, kept_tolerance = runs[0], existing_values(args.profile)[1]
    else:
        reference, kept_tolerance = runs[0], {}
    own_spread = single_run_spread(args.runs[0]) if args.own_spread else None
    tree, spreads, noisy = expected_tree(reference, runs, test_images, kept_tolerance, args.noisy_above, args.range_only_for_trained, own_spread, intervals if not args.keep_values else None)
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
        + (f"# Too noisy at this size to check usefully (tolerance above {args.noisy_above:g}), so checked to be present and\n"
           f"# within their range, and by the sturdier rules every run bore out (interval_contains: the run's 95% interval\n"
           f"# contains the recorded value; min: the correlation is above it): "
           + "; ".join(f"{name} (spread {spread:.3f}; {rules_named(tree, name)})" for name, spread in noisy.items()) + ".\n" if noisy else "")
        + ("# --own-spread: tolerances of at least 3 standard deviations over the run's training seeds (rows on features), or\n"
           "# the half-width of the metric's 95% bootstrap interval for rows trained once (fine-tuned rows, Fig. 7 unless seeded):\n"
           "# another machine's numerics move a small model about as much as another seed does.\n" if args.own_spread else "")
        + "# Synthetic data: these numbers test the pipeline, not the paper.\n"
    )
    target = PARAMS_DIR / args.profile / "expected.yaml"
    target.write_text(header + yaml.safe_dump(tree, sort_keys=False, width=120))
    widest = max(spreads, key=spreads.get)
    print(f"wrote {target}: {len(reference)} metrics; largest difference {spreads[widest]:.4f} ({widest})")


if __name__ == "__main__":
    main()
