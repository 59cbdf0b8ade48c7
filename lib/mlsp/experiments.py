"""The experiments behind Tables 2-3 and Fig. 7: which stored features each row trains on, and the
train / test loop that turns a row into SRCC, PLCC and accuracy."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from mlsp import heads, metrics, train
from mlsp.data import read_metadata
from mlsp.store import FeatureReader, store_path


@dataclass(frozen=True)
class Row:
    label: str
    head: str
    mode: str
    kind: str
    augment: bool
    last_blocks: int | None = None  # None: all blocks
    dropout: tuple = heads.DEFAULT_DROPOUT


TABLE2_FEATURE_ROWS = [
    Row("Single-3FC (-aug)", "single_3fc", "rescaled", "narrow", False),
    Row("Single-3FC", "single_3fc", "rescaled", "narrow", True),
    Row("Multi-3FC", "multi_3fc", "rescaled", "narrow", True),
    Row("Single-1FC (all)", "single_1fc", "rescaled", "narrow", True),
    Row("Single-1FC (5)", "single_1fc", "rescaled", "narrow", True, last_blocks=5),
]
# The same rows end to end, plus Single-3FC with the higher dropout of "(+do)".
TABLE2_FINETUNE_ROWS = [
    *TABLE2_FEATURE_ROWS[:3],
    Row("Single-3FC (+do)", "single_3fc", "rescaled", "narrow", True, dropout=(0.5, 0.5, 0.75)),
    *TABLE2_FEATURE_ROWS[3:],
]
TABLE3_ROWS = [
    Row("Single-3FC (-aug)", "single_3fc", "original", "narrow", False),
    Row("Single-3FC", "single_3fc", "original", "narrow", True),
    Row("Pool-3FC (-aug)", "pool_3fc", "original", "wide", False),
    Row("Pool-3FC", "pool_3fc", "original", "wide", True),
]


@dataclass
class Split:
    metadata: pd.DataFrame
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    @property
    def mos(self) -> np.ndarray:
        return self.metadata["mos"].to_numpy(dtype=np.float32)


def load_split(metadata_csv) -> Split:
    metadata = read_metadata(metadata_csv)
    rows = {name: np.flatnonzero(metadata["set"].to_numpy() == name) for name in ("train", "validation", "test")}
    for name, found in rows.items():
        if len(found) == 0:
            raise ValueError(f"{metadata_csv}: the {name} set is empty; use more images")
    return Split(metadata, rows["train"], rows["validation"], rows["test"])


def protocol_from(parameters: dict) -> train.Protocol:
    fields = train.Protocol.__dataclass_fields__
    return train.Protocol(**{key: value for key, value in parameters.items() if key in fields})


def block_channels(boundaries, last_blocks: int | None) -> tuple[slice | None, list[int]]:
    """The channel slice of the last k blocks, and the block boundaries within it."""
    boundaries = [int(b) for b in boundaries]
    if last_blocks is None or last_blocks >= len(boundaries) - 1:
        return None, boundaries
    start = boundaries[-1 - last_blocks]
    return slice(start, None), [b - start for b in boundaries[-1 - last_blocks :]]


def run_feature_row(row: Row, split: Split, features_dir, backbone: str, protocol: train.Protocol, seed: int, in_memory: bool = True, model_path: Path | None = None) -> dict:
    """Train a head on stored features with the paper's protocol and evaluate it on the test set."""
    started = time.perf_counter()
    path = store_path(features_dir, backbone, row.mode, row.kind, row.augment)
    source, attrs = train.load_features(path, in_memory, image_ids=split.metadata["image_id"])
    boundaries, weights = list(attrs["block_boundaries"]), str(attrs["weights"])
    channels, local_boundaries = block_channels(boundaries, row.last_blocks)
    n_channels = local_boundaries[-1] - local_boundaries[0]
    keras.utils.set_random_seed(seed)  # the head's initial weights too, not only what fit() draws
    model = heads.build(row.head, n_channels, local_boundaries, row.dropout)
    mos = split.mos
    result = train.fit(model, source, split.train, mos[split.train], split.validation, mos[split.validation], protocol, seed, channels=channels)
    predicted = train.predict(model, source, split.test, channels=channels)
    if model_path is not None:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model.save(model_path)
        model_path.with_suffix(".json").write_text(json.dumps({"row": asdict(row), "backbone": backbone, "weights": weights, "protocol": asdict(protocol), "seed": seed}, indent=2))
    if isinstance(source, FeatureReader):
        source.close()
    evaluation = metrics.evaluate(predicted, mos[split.test])
    print(f"{row.label:<20} {backbone}: {result.epochs:3d} epochs in {time.perf_counter() - started:5.1f} s, test SRCC {evaluation['srcc']:.3f}", flush=True)
    return {
        "label": row.label, "head": row.head, "backbone": backbone, "weights": weights,
        "parameters": int(model.count_params()), "epochs": result.epochs, "history": result.history,
        "predicted": predicted, "true": mos[split.test], **evaluation,
    }


def results_table(results: list[dict], paper: dict | None = None) -> pd.DataFrame:
    """One line per row: SRCC, PLCC, accuracy, and the paper's values and the differences when known."""
    lines = []
    for result in results:
        line = {"row": result["label"], "backbone": result["backbone"], "weights": result["weights"], "epochs": result["epochs"],
                "srcc": result["srcc"], "plcc": result["plcc"], "accuracy": result["accuracy"], "majority_accuracy": result["majority_accuracy"]}
        if paper is not None:
            published = paper.get(result["label"])
            for position, name in enumerate(("srcc", "plcc", "accuracy")):
                line[f"paper_{name}"] = published[position] if published else np.nan
                line[f"diff_{name}"] = line[name] - published[position] if published else np.nan
        lines.append(line)
    return pd.DataFrame(lines)


def metrics_tree(results: list[dict]) -> dict:
    return {result["label"]: {name: result[name] for name in ("srcc", "plcc", "accuracy", "majority_accuracy")} for result in results}


def predictions_table(result: dict, split: Split) -> pd.DataFrame:
    test = split.metadata.iloc[split.test]
    return pd.DataFrame({"image_id": test["image_id"].to_numpy(), "true_mos": result["true"], "predicted_mos": result["predicted"], "width": test["width"].to_numpy(), "height": test["height"].to_numpy()})
