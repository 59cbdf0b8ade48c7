"""The paper's claims as paired comparisons: does row a beat row b on the same test images?

Each claim names two rows whose difference the paper reports in one direction (a better than b):
full resolution over rescaled input, wide over narrow features, augmented over whole-image training,
all blocks over the last 5, fine-tuning over features for Single-1FC (5). The difference in SRCC
comes with a paired bootstrap interval (mlsp.metrics.paired_difference: one set of resampled images
per resample, scored for both rows), on the images both rows were tested on.

Verdicts: "supported" when the interval lies above 0 (the paper's direction), "contradicted" when it
lies below 0, otherwise "not resolved at this size": on the demo's 105 test images most differences
the paper reports (0.01-0.05 SRCC on 20,000 images) are far inside the noise.

Training seeds: where both rows were trained with several seeds (the `seeds` parameter), the claim is
tested once per seed they share, pairing seed with seed. The verdict is "supported" or "contradicted"
only when every seed gives it; when seeds disagree it is "not resolved at this size", and `note` says
so. `difference`, `low` and `high` are the first seed's (the one the tables report); `seed_verdicts`
lists each seed's. On the demo a verdict from one seed flipped with another (README).

A claim whose two tables ran for its backbone but not one of its rows (fine-tuning off: the
fine-tuning claim) is listed as "not run", so that a missing claim is visible rather than absent.

Input: the long prediction tables that notebooks 02 and 03 write (`table2_predictions.csv`,
`table3_predictions.csv`: row, finetune, seed, backbone, image_id, true_mos, predicted_mos).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlsp import metrics
from mlsp.data import read_csv_with_ids

PREDICTION_FILES = {"Table 2": "table2_predictions.csv", "Table 3": "table3_predictions.csv"}
SUPPORTED, CONTRADICTED, UNRESOLVED, NOT_RUN = "supported", "contradicted", "not resolved at this size", "not run"
COLUMNS = ["claim", "a", "b", "difference", "low", "high", "verdict", "seeds", "seed_verdicts", "images", "srcc_a", "srcc_b", "note"]


@dataclass(frozen=True)
class RowRef:
    """One trained row: its table ("Table 2" or "Table 3"), whether fine-tuned, backbone and label."""

    table: str
    finetune: bool
    backbone: str
    row: str

    @property
    def name(self) -> str:
        kind = f" {'fine-tuned' if self.finetune else 'features'}" if self.table == "Table 2" else ""
        return f"{self.table}{kind}: {self.row} [{self.backbone}]"


@dataclass(frozen=True)
class Claim:
    """The paper says `better` beats `worse` (SRCC); `claim` says so in a few words."""

    claim: str
    better: RowRef
    worse: RowRef


def load_predictions(directory) -> pd.DataFrame:
    """The prediction tables found in a results folder, stacked, with a `table` column ("Table 2",
    "Table 3") and `finetune` as bool. An empty frame when neither file exists. Files written before
    the `seed` column existed hold one seed per row: it reads as seed 0."""
    tables = []
    for table, name in PREDICTION_FILES.items():
        path = Path(directory) / name
        if path.exists():
            found = read_csv_with_ids(path)
            found["finetune"] = found["finetune"].astype(str).str.lower().isin(["yes", "true"])
            if "seed" not in found.columns:
                found["seed"] = 0
            tables.append(found.assign(table=table))
    columns = ["table", "row", "finetune", "seed", "backbone", "image_id", "true_mos", "predicted_mos"]
    return pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)


def available(predictions: pd.DataFrame) -> set[RowRef]:
    rows = predictions[["table", "finetune", "backbone", "row"]].drop_duplicates()
    return {RowRef(t, bool(f), b, r) for t, f, b, r in rows.itertuples(index=False)}


def paper_claims(predictions: pd.DataFrame) -> list[Claim]:
    """The claims whose two rows are both in `predictions`, in the paper's order."""
    have = available(predictions)
    return [claim for claim in _candidates(have) if claim.better in have and claim.worse in have]


def unrun_claims(predictions: pd.DataFrame) -> list[Claim]:
    """The claims one of whose rows is missing although its table ran for that backbone (fine-tuning
    switched off; a row left out by a parameter). A claim whose table did not run for the backbone at
    all (Table 2 is Inception-v3 only in the paper profile) is not one the profile set out to test."""
    have = available(predictions)
    ran = {(ref.table, ref.backbone) for ref in have}
    return [claim for claim in _candidates(have) if not (claim.better in have and claim.worse in have)
            and all((ref.table, ref.backbone) in ran for ref in (claim.better, claim.worse))]


def _candidates(have: set[RowRef]) -> list[Claim]:
    candidates = []
    for backbone in sorted({ref.backbone for ref in have}):
        def t2(row, finetune=False):
            return RowRef("Table 2", finetune, backbone, row)

        def t3(row):
            return RowRef("Table 3", False, backbone, row)

        for row in ("Single-3FC", "Single-3FC (-aug)"):
            candidates.append(Claim("full resolution beats rescaled input", t3(row), t2(row)))
        for aug in ("", " (-aug)"):
            candidates.append(Claim("wide features (Pool-3FC) beat narrow (Single-3FC)", t3(f"Pool-3FC{aug}"), t3(f"Single-3FC{aug}")))
        for better, worse in ((t2("Single-3FC"), t2("Single-3FC (-aug)")), (t2("Single-3FC", True), t2("Single-3FC (-aug)", True)),
                              (t3("Single-3FC"), t3("Single-3FC (-aug)")), (t3("Pool-3FC"), t3("Pool-3FC (-aug)"))):
            candidates.append(Claim("augmentation beats none (-aug)", better, worse))
        candidates.append(Claim("all blocks beat the last 5 (Single-1FC)", t2("Single-1FC (all)"), t2("Single-1FC (5)")))
        candidates.append(Claim("fine-tuning beats features for Single-1FC (5)", t2("Single-1FC (5)", True), t2("Single-1FC (5)")))
    return candidates


def verdict(low: float, high: float) -> str:
    """From the interval of (better - worse): above 0 supports, below 0 contradicts."""
    if low > 0:
        return SUPPORTED
    if high < 0:
        return CONTRADICTED
    return UNRESOLVED


def _select(predictions: pd.DataFrame, ref: RowRef) -> pd.DataFrame:
    chosen = predictions[(predictions["table"] == ref.table) & (predictions["finetune"] == ref.finetune) & (predictions["backbone"] == ref.backbone) & (predictions["row"] == ref.row)]
    if chosen[["seed", "image_id"]].duplicated().any():
        raise ValueError(f"{ref.name}: an image is predicted twice for one seed")
    return chosen[["seed", "image_id", "true_mos", "predicted_mos"]]


def seed_pairs(seeds_a, seeds_b) -> list[tuple]:
    """The training seeds two rows are compared on: each seed both were trained with, paired with
    itself; rows that share none (a fine-tuned row trained once, beside rows on features with other
    seeds) are paired in order, first with first."""
    seeds_a, seeds_b = sorted(set(seeds_a)), sorted(set(seeds_b))
    shared = [seed for seed in seeds_a if seed in seeds_b]
    return [(seed, seed) for seed in shared] if shared else list(zip(seeds_a, seeds_b))


def compare(predictions: pd.DataFrame, claim: Claim, resamples: int = metrics.RESAMPLES, seed: int = 0, confidence: float = metrics.CONFIDENCE) -> dict:
    """One line of the claims table: SRCC(better) - SRCC(worse) on the images both rows were tested
    on (`images` says how many), its paired bootstrap interval, and the verdict, per training seed
    the rows share (seed_pairs; the module's description says how seeds combine). `seed` draws the
    resamples. Raises ValueError when the rows share fewer than 2 images or disagree on an image's
    true MOS."""
    better, worse = _select(predictions, claim.better), _select(predictions, claim.worse)
    per_seed = []
    for seed_a, seed_b in seed_pairs(better["seed"], worse["seed"]):
        both = better[better["seed"] == seed_a].merge(worse[worse["seed"] == seed_b], on="image_id", suffixes=("_a", "_b"))
        if len(both) < 2:
            raise ValueError(f"{claim.better.name} and {claim.worse.name} share {len(both)} test image(s)")
        if not np.allclose(both["true_mos_a"], both["true_mos_b"], atol=1e-4):
            raise ValueError(f"{claim.better.name} and {claim.worse.name} give different true MOS for the same image")
        true = both["true_mos_a"].to_numpy()
        difference, low, high = metrics.paired_difference(both["predicted_mos_a"], both["predicted_mos_b"], true, resamples, seed, confidence)
        per_seed.append({"seed": seed_a if seed_a == seed_b else f"{seed_a}/{seed_b}", "difference": difference, "low": low, "high": high, "verdict": verdict(low, high), "images": len(both),
                         "srcc_a": metrics.srcc(both["predicted_mos_a"], true), "srcc_b": metrics.srcc(both["predicted_mos_b"], true)})
    verdicts = {run["verdict"] for run in per_seed}
    agreed = verdicts.pop() if len(verdicts) == 1 else UNRESOLVED
    first = per_seed[0]
    return {
        "claim": claim.claim, "a": claim.better.name, "b": claim.worse.name,
        "difference": first["difference"], "low": first["low"], "high": first["high"], "verdict": agreed,
        "seeds": len(per_seed), "seed_verdicts": "; ".join(f"seed {run['seed']}: {run['verdict']} ({run['difference']:+.3f})" for run in per_seed),
        "images": first["images"], "srcc_a": first["srcc_a"], "srcc_b": first["srcc_b"],
        "note": note(agreed, [run["verdict"] for run in per_seed]),
    }


def note(agreed: str, verdicts: list[str]) -> str:
    """Why a verdict needs care: seeds that disagree, or a verdict resting on one training seed (on the
    demo, such verdicts flipped with the seed: README)."""
    if len(set(verdicts)) > 1:
        return "the seeds disagree"
    if len(verdicts) == 1 and agreed in (SUPPORTED, CONTRADICTED):
        return "one training seed: provisional"
    return ""


def not_run_line(claim: Claim, predictions: pd.DataFrame) -> dict:
    have = available(predictions)
    missing = " and ".join(ref.name for ref in (claim.better, claim.worse) if ref not in have)
    return {"claim": claim.claim, "a": claim.better.name, "b": claim.worse.name, "difference": np.nan, "low": np.nan, "high": np.nan,
            "verdict": NOT_RUN, "seeds": 0, "seed_verdicts": "", "images": 0, "srcc_a": np.nan, "srcc_b": np.nan,
            "note": f"{missing} not run in this profile"}


def claims_table(predictions: pd.DataFrame, resamples: int = metrics.RESAMPLES, seed: int = 0, confidence: float = metrics.CONFIDENCE) -> pd.DataFrame:
    """Every claim whose rows were run (paper_claims), one line each, then those one of whose rows was
    not (unrun_claims, verdict "not run"); columns COLUMNS."""
    lines = [compare(predictions, claim, resamples, seed, confidence) for claim in paper_claims(predictions)]
    lines += [not_run_line(claim, predictions) for claim in unrun_claims(predictions)]
    return pd.DataFrame(lines, columns=COLUMNS)


def sentence(line) -> str:
    """One claims-table line in words."""
    if line["verdict"] == NOT_RUN:
        return f"{line['claim']}: not run ({line['note']})."
    seeds = f"; per seed: {line['seed_verdicts']}" if int(line["seeds"]) > 1 else ""
    return (
        f"{line['claim']}: {line['a']} minus {line['b']} = {line['difference']:+.3f} SRCC "
        f"(95% interval {line['low']:+.3f} to {line['high']:+.3f}, {int(line['images'])} test images{seeds}): {line['verdict']}"
        + (f" ({line['note']})." if line["note"] else ".")
    )


def metrics_record(table: pd.DataFrame) -> dict:
    """The claims table as a result JSON's metrics: {"<a> vs <b>": {claim, a, b, difference, low, high, images, verdict, seeds, seed_verdicts, note}}."""
    names = ("claim", "a", "b", "difference", "low", "high", "images", "verdict", "seeds", "seed_verdicts", "note")
    return {f"{line['a']} vs {line['b']}": {name: line[name] for name in names} for _, line in table.iterrows()}
