"""The paper's claims as paired comparisons: does row a beat row b on the same test images?

Each claim names two rows whose difference the paper reports in one direction (a better than b):
full resolution over rescaled input, wide over narrow features, augmented over whole-image training,
all blocks over the last 5, fine-tuning over features for Single-1FC (5). The difference in SRCC
comes with a paired bootstrap interval (mlsp.metrics.paired_difference: one set of resampled images
per resample, scored for both rows), on the images both rows were tested on.

Verdicts: "supported" when the interval lies above 0 (the paper's direction), "contradicted" when it
lies below 0, otherwise "not resolved at this size": on the demo's 105 test images most differences
the paper reports (0.01-0.05 SRCC on 20,000 images) are far inside the noise.

Input: the long prediction tables that notebooks 02 and 03 write (`table2_predictions.csv`,
`table3_predictions.csv`: row, finetune, backbone, image_id, true_mos, predicted_mos).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlsp import metrics
from mlsp.data import read_csv_with_ids

PREDICTION_FILES = {"Table 2": "table2_predictions.csv", "Table 3": "table3_predictions.csv"}
SUPPORTED, CONTRADICTED, UNRESOLVED = "supported", "contradicted", "not resolved at this size"
COLUMNS = ["claim", "a", "b", "difference", "low", "high", "verdict", "images", "srcc_a", "srcc_b"]


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
    "Table 3") and `finetune` as bool. An empty frame when neither file exists."""
    tables = []
    for table, name in PREDICTION_FILES.items():
        path = Path(directory) / name
        if path.exists():
            found = read_csv_with_ids(path)
            found["finetune"] = found["finetune"].astype(str).str.lower().isin(["yes", "true"])
            tables.append(found.assign(table=table))
    columns = ["table", "row", "finetune", "backbone", "image_id", "true_mos", "predicted_mos"]
    return pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)


def available(predictions: pd.DataFrame) -> set[RowRef]:
    rows = predictions[["table", "finetune", "backbone", "row"]].drop_duplicates()
    return {RowRef(t, bool(f), b, r) for t, f, b, r in rows.itertuples(index=False)}


def paper_claims(predictions: pd.DataFrame) -> list[Claim]:
    """The claims whose two rows are both in `predictions`, in the paper's order."""
    have = available(predictions)
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
    return [claim for claim in candidates if claim.better in have and claim.worse in have]


def verdict(low: float, high: float) -> str:
    """From the interval of (better - worse): above 0 supports, below 0 contradicts."""
    if low > 0:
        return SUPPORTED
    if high < 0:
        return CONTRADICTED
    return UNRESOLVED


def _select(predictions: pd.DataFrame, ref: RowRef) -> pd.DataFrame:
    chosen = predictions[(predictions["table"] == ref.table) & (predictions["finetune"] == ref.finetune) & (predictions["backbone"] == ref.backbone) & (predictions["row"] == ref.row)]
    if chosen["image_id"].duplicated().any():
        raise ValueError(f"{ref.name}: an image is predicted twice")
    return chosen[["image_id", "true_mos", "predicted_mos"]]


def compare(predictions: pd.DataFrame, claim: Claim, resamples: int = metrics.RESAMPLES, seed: int = 0, confidence: float = metrics.CONFIDENCE) -> dict:
    """One line of the claims table: SRCC(better) - SRCC(worse) on the images both rows were tested
    on (`images` says how many), its paired bootstrap interval, and the verdict.
    Raises ValueError when the rows share fewer than 2 images or disagree on an image's true MOS."""
    better, worse = _select(predictions, claim.better), _select(predictions, claim.worse)
    both = better.merge(worse, on="image_id", suffixes=("_a", "_b"))
    if len(both) < 2:
        raise ValueError(f"{claim.better.name} and {claim.worse.name} share {len(both)} test image(s)")
    if not np.allclose(both["true_mos_a"], both["true_mos_b"], atol=1e-4):
        raise ValueError(f"{claim.better.name} and {claim.worse.name} give different true MOS for the same image")
    true = both["true_mos_a"].to_numpy()
    difference, low, high = metrics.paired_difference(both["predicted_mos_a"], both["predicted_mos_b"], true, resamples, seed, confidence)
    return {
        "claim": claim.claim, "a": claim.better.name, "b": claim.worse.name,
        "difference": difference, "low": low, "high": high, "verdict": verdict(low, high), "images": len(both),
        "srcc_a": metrics.srcc(both["predicted_mos_a"], true), "srcc_b": metrics.srcc(both["predicted_mos_b"], true),
    }


def claims_table(predictions: pd.DataFrame, resamples: int = metrics.RESAMPLES, seed: int = 0, confidence: float = metrics.CONFIDENCE) -> pd.DataFrame:
    """Every claim whose rows were run (paper_claims), one line each, columns COLUMNS."""
    lines = [compare(predictions, claim, resamples, seed, confidence) for claim in paper_claims(predictions)]
    return pd.DataFrame(lines, columns=COLUMNS)


def sentence(line) -> str:
    """One claims-table line in words."""
    return (
        f"{line['claim']}: {line['a']} minus {line['b']} = {line['difference']:+.3f} SRCC "
        f"(95% interval {line['low']:+.3f} to {line['high']:+.3f}, {int(line['images'])} test images): {line['verdict']}."
    )


def metrics_record(table: pd.DataFrame) -> dict:
    """The claims table as a result JSON's metrics: {"<a> vs <b>": {claim, a, b, difference, low, high, images, verdict}}."""
    return {f"{line['a']} vs {line['b']}": {name: line[name] for name in ("claim", "a", "b", "difference", "low", "high", "images", "verdict")} for _, line in table.iterrows()}
