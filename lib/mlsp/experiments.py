"""The experiments behind Tables 2-3 and Fig. 7: which stored features each row trains on, and the
train / test loop that turns a row into SRCC, PLCC and accuracy."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from mlsp import distribute, heads, metrics, train
from mlsp import data
from mlsp.data import read_metadata
from mlsp.names import TABLE2_FEATURE_ROWS, TABLE2_FINETUNE_ROWS, TABLE3_ROWS, Row  # noqa: F401 (the notebooks read them here)
from mlsp.store import FeatureReader, store_path


@dataclass
class Split:
    """The metadata and the row positions of each set; `scale` (MOS range, accuracy threshold) and
    `data_format` as notebook 00 recorded them in metadata.json (AVA's when absent)."""

    metadata: pd.DataFrame
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    scale: data.ScoreScale = data.FORMAT_SCALES["ava"]
    data_format: str = "ava"

    @property
    def mos(self) -> np.ndarray:
        return self.metadata["mos"].to_numpy(dtype=np.float32)

    @property
    def largest_training_side(self) -> int:
        """The longest side (pixels) among the training images: a scorer brings new photos to it."""
        return int(self.metadata.iloc[self.train][["width", "height"]].to_numpy().max())


def load_split(metadata_csv) -> Split:
    """The split of notebook 00's metadata CSV, with the score scale and format of metadata.json beside it."""
    metadata = read_metadata(metadata_csv)
    rows = {name: np.flatnonzero(metadata["set"].to_numpy() == name) for name in ("train", "validation", "test")}
    for name, found in rows.items():
        if len(found) == 0:
            raise ValueError(f"{metadata_csv}: the {name} set is empty; use more images")
    work_dir = Path(metadata_csv).parent
    return Split(metadata, rows["train"], rows["validation"], rows["test"], data.score_scale(work_dir), data.data_format(work_dir))


def evaluate(predicted, split: Split, seed: int) -> dict:
    """mlsp.metrics.evaluate of test predictions on the split's scale: accuracy at its threshold,
    out_of_range against its score range; intervals drawn from `seed`."""
    return metrics.evaluate(predicted, split.mos[split.test], seed=seed, threshold=split.scale.accuracy_threshold, score_range=split.scale.score_range)


def row_stores(rows: list[Row], features_dir, backbones: list[str]) -> list[Path]:
    """The feature stores a list of rows reads, for each backbone (each store once)."""
    paths = [store_path(features_dir, backbone, row.mode, row.kind, row.augment) for backbone in backbones for row in rows]
    return list(dict.fromkeys(paths))


def usable_split(metadata_csv, stores: list[Path]) -> tuple[Split, pd.DataFrame]:
    """The split restricted to images with features in every store, and the images left out.

    Every row of a notebook then trains and tests on the same images. The left-out table has one line
    per (image, store) with columns image_id, set, store, reason. Raises FileNotFoundError for a missing
    store, ValueError when a store holds other images or a set ends up empty, RuntimeError when
    extraction has not finished (images still pending)."""
    split = load_split(metadata_csv)
    ids = split.metadata["image_id"].tolist()
    usable = np.ones(len(ids), dtype=bool)
    left_out = []
    for path in stores:
        with FeatureReader(path) as reader:
            if reader.ids != ids:
                raise ValueError(f"{path}: its images differ from {metadata_csv}; rerun notebook 01_extract_features")
            if reader.pending.any():
                raise RuntimeError(f"{path}: {int(reader.pending.sum())} images have not been extracted yet; rerun notebook 01_extract_features")
            reasons = reader.failure_reasons()
            usable &= reader.done
        for image_id, reason in reasons.items():
            left_out.append({"image_id": image_id, "store": str(Path(path).relative_to(Path(path).parents[1])), "reason": reason})
    table = pd.DataFrame(left_out, columns=["image_id", "store", "reason"])
    table.insert(1, "set", table["image_id"].map(dict(zip(ids, split.metadata["set"]))))
    restricted = replace(split, **{name: rows[usable[rows]] for name, rows in (("train", split.train), ("validation", split.validation), ("test", split.test))})
    for name in ("train", "validation", "test"):
        if len(getattr(restricted, name)) == 0:
            raise ValueError(f"{metadata_csv}: no {name} image has features in every store ({len(getattr(split, name))} listed, all failed extraction; see the stores' .failures.csv)")
    if len(table):
        print(f"{table['image_id'].nunique()} images left out: their extraction failed (reasons in the left-out table)")
    return restricted, table


def protocol_from(parameters: dict) -> train.Protocol:
    fields = train.Protocol.__dataclass_fields__
    return train.Protocol(**{key: value for key, value in parameters.items() if key in fields})


def block_channels(boundaries, last_blocks: int | None) -> tuple[slice | None, list[int]]:
    """The channel slice of the last k blocks, and the block boundaries within it. Raises ValueError
    when k exceeds the number of blocks (a row labelled "last 20 blocks" must not train on 16)."""
    boundaries = [int(b) for b in boundaries]
    if last_blocks is not None and last_blocks > len(boundaries) - 1:
        raise ValueError(f"last_blocks={last_blocks}, but the features have {len(boundaries) - 1} blocks (block_counts must lie in 1..{len(boundaries) - 1})")
    if last_blocks is None or last_blocks == len(boundaries) - 1:
        return None, boundaries
    start = boundaries[-1 - last_blocks]
    return slice(start, None), [b - start for b in boundaries[-1 - last_blocks :]]


def run_feature_row(row: Row, split: Split, features_dir, backbone: str, protocol: train.Protocol, seed: int, in_memory: bool = True, model_path: Path | None = None, seeds: int = 1) -> dict:
    """Train a head on stored features with the paper's protocol and evaluate it on the test set;
    with `seeds` > 1, train it again with seeds seed + 1, ..., seed + seeds - 1 (the `seeds`
    parameter of notebooks 02-04).

    The result is the first seed's (its predictions, intervals, saved model and curves), with the
    training noise beside it (with_seed_spread): the bootstrap interval says how much the test images
    move a number, the spread over seeds how much the initial weights, the batch order and the views
    drawn move it. The paper reports one run per row.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1, got {seeds!r}")
    runs = [_feature_row_once(row, split, features_dir, backbone, protocol, seed, in_memory, model_path)]
    runs += [_feature_row_once(row, split, features_dir, backbone, protocol, seed + offset, in_memory, None) for offset in range(1, seeds)]
    return with_seed_spread(runs)


SEED_STATISTICS = ("mean", "sd")


def with_seed_spread(runs: list[dict]) -> dict:
    """The first run, with `seeds` (how many runs) and `<metric>_seeds_mean`, `<metric>_seeds_sd`
    (standard deviation, ddof 1; NaN for one run) of SRCC, PLCC and accuracy over all runs,
    `seed_runs`, each run's metrics, and `seed_predictions`, each run's (seed, test predictions) for
    the per-seed paired claims (row_predictions, mlsp.claims)."""
    first = dict(runs[0])
    first["seeds"] = len(runs)
    first["seed_runs"] = [{"srcc": float(run["srcc"]), "plcc": float(run["plcc"]), "accuracy": float(run["accuracy"])} for run in runs]
    first["seed_predictions"] = [(run["seed"], run["predicted"]) for run in runs]
    for name in INTERVAL_METRICS:
        values = np.array([run[name] for run in runs], dtype=np.float64)
        first[f"{name}_seeds_mean"] = float(values.mean())
        first[f"{name}_seeds_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return first


def _feature_row_once(row: Row, split: Split, features_dir, backbone: str, protocol: train.Protocol, seed: int, in_memory: bool = True, model_path: Path | None = None) -> dict:
    """One training run of run_feature_row.

    Besides the test metrics (mlsp.metrics.evaluate, intervals seeded by `seed`), the result holds
    `validation_loss`: the MSE of the restored (best) weights on the validation images, predicted as
    the test images are (mean over all stored views). Rows are chosen by it (`best_by_validation`),
    not by the epoch minimum of training: that one sees one random view per image per epoch, so the
    minimum over epochs is lower the noisier a row's validation is (the 8-view rows against "-aug")."""
    started = time.perf_counter()
    path = store_path(features_dir, backbone, row.mode, row.kind, row.augment)
    source, attrs = train.load_features(path, in_memory, image_ids=split.metadata["image_id"], rows=np.concatenate([split.train, split.validation, split.test]))
    boundaries, weights = list(attrs["block_boundaries"]), str(attrs["weights"])
    channels, local_boundaries = block_channels(boundaries, row.last_blocks)
    n_channels = local_boundaries[-1] - local_boundaries[0]
    keras.utils.set_random_seed(seed)  # the head's initial weights too, not only what fit() draws
    with distribute.scope(protocol.distribute):  # "mirrored": the head's variables on every GPU
        model = heads.build(row.head, n_channels, local_boundaries, row.dropout, protocol.batch_norm_momentum)
    mos = split.mos
    result = train.fit(model, source, split.train, mos[split.train], split.validation, mos[split.validation], protocol, seed, channels=channels)
    predicted = train.predict(model, source, split.test, channels=channels)
    validation_loss = float(np.mean((train.predict(model, source, split.validation, channels=channels) - mos[split.validation]) ** 2))
    if model_path is not None:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model.save(model_path)
        model_path.with_suffix(".json").write_text(json.dumps({"row": asdict(row), "backbone": backbone, "weights": weights, "protocol": asdict(protocol), "seed": seed}, indent=2))
    if isinstance(source, FeatureReader):
        source.close()
    evaluation = evaluate(predicted, split, seed)
    print(f"{row.label:<20} {backbone}: {result.epochs:3d} epochs in {time.perf_counter() - started:5.1f} s, validation MSE {validation_loss:.3f}, test SRCC {evaluation['srcc']:.3f}", flush=True)
    return {
        "label": row.label, "head": row.head, "backbone": backbone, "weights": weights, "seed": seed,
        "parameters": int(model.count_params()), "epochs": result.epochs, "history": result.history,
        "validation_loss": validation_loss, "predicted": predicted, "true": mos[split.test], **evaluation,
    }


INTERVAL_METRICS = metrics.INTERVAL_METRICS
ROW_METRICS = (
    tuple(f"{name}{end}" for name in INTERVAL_METRICS for end in ("", "_low", "_high")) + ("majority_accuracy", "out_of_range", "validation_loss", "seeds")
    + tuple(f"{name}_seeds_{statistic}" for name in INTERVAL_METRICS for statistic in SEED_STATISTICS)
)


def row_metrics(result: dict) -> dict:
    """A row's metrics for tables and JSON: each of SRCC, PLCC, accuracy with its interval bounds
    (`<name>_low`, `<name>_high`; NaN when the result has none), the majority baseline, how many
    predictions fell outside the MOS range, the validation loss (NaN for fine-tuned rows), and the
    number of training seeds with each metric's mean and standard deviation over them (1 and NaN for
    rows trained once: fine-tuned rows and results written before seeds existed)."""
    return {name: result.get(name, 1 if name == "seeds" else np.nan) for name in ROW_METRICS}


def scale_sentence(split: Split) -> str:
    """One line for a notebook: the data set's format and the scale its metrics use."""
    others = "" if split.data_format == "ava" else "; the paper columns stay empty (the paper's numbers are AVA's)"
    return f"{split.data_format} data: {split.scale.describe()} (out_of_range counts predictions outside {split.scale.score_min:g}-{split.scale.score_max:g}){others}"


def published_for(split: Split, published: dict) -> dict:
    """The paper's values for a table's rows when the split is AVA's; {} otherwise, so that the
    paper and diff columns stay in the table, empty (NaN): the paper's numbers are AVA's."""
    return published if split.data_format == "ava" else {}


def results_table(results: list[dict], paper: dict | None = None) -> pd.DataFrame:
    """One line per row: the head's parameter count, SRCC, PLCC, accuracy, each beside its 95% interval, the out-of-range count,
    the validation loss, and the paper's values and the differences when known."""
    lines = []
    for result in results:
        line = {"row": result["label"], "backbone": result["backbone"], "weights": result["weights"], "parameters": result.get("parameters"), "epochs": result["epochs"], **row_metrics(result)}
        if paper is not None:
            published = paper.get(result["label"])
            for position, name in enumerate(("srcc", "plcc", "accuracy")):
                line[f"paper_{name}"] = published[position] if published else np.nan
                line[f"diff_{name}"] = line[name] - published[position] if published else np.nan
        lines.append(line)
    # nullable integers: the count stays a count when the table is concatenated with an empty one
    # (Table 2 without fine-tuning), instead of turning into a float such as 6.07898e+06
    return pd.DataFrame(lines).astype({"parameters": "Int64"}) if lines else pd.DataFrame(lines)


def metrics_tree(results: list[dict]) -> dict:
    """{row label: row_metrics}; NaN (no interval, no validation loss) becomes null in the JSON."""
    return {result["label"]: row_metrics(result) for result in results}


def best_by_validation(results: list[dict]) -> dict:
    """The result with the lowest `validation_loss`: the row a user would pick without seeing the
    test set. Picking by test SRCC would report the maximum of several noisy test numbers as if it
    were one row's. Raises ValueError when no result has a finite validation loss."""
    candidates = [result for result in results if np.isfinite(result.get("validation_loss", np.nan))]
    if not candidates:
        raise ValueError(f"none of {len(results)} results has a validation loss to choose by")
    return min(candidates, key=lambda result: result["validation_loss"])


def selection_record(best: dict) -> dict:
    """What a result JSON says about a chosen row: which, by what criterion, and that value."""
    return {"backbone": best["backbone"], "label": best["label"], "selected_by": "validation_loss", "validation_loss": float(best["validation_loss"]), "test_srcc": float(best["srcc"])}


def _test_paths(split: Split) -> dict:
    """{"path": the test images' files, as the metadata writes them} when the metadata has a path
    column (notebook 00 writes one), else {} (older metadata: AVA's layout, mlsp.data.image_paths)."""
    return {"path": split.metadata.iloc[split.test]["path"].to_numpy()} if "path" in split.metadata.columns else {}


def predictions_table(result: dict, split: Split) -> pd.DataFrame:
    """One row's test predictions: image_id, true_mos, predicted_mos, width, height, and path when the
    metadata has it (notebook 06 finds the images by it, whatever the data set's layout)."""
    test = split.metadata.iloc[split.test]
    return pd.DataFrame({"image_id": test["image_id"].to_numpy(), "true_mos": result["true"], "predicted_mos": result["predicted"], "width": test["width"].to_numpy(), "height": test["height"].to_numpy(), **_test_paths(split)})


def row_predictions(results: list[dict], split: Split, **columns) -> pd.DataFrame:
    """Every row's test predictions in long format, one line per (row, training seed, test image): row,
    the given constant `columns` (e.g. finetune="no"), seed, backbone, image_id, true_mos,
    predicted_mos, and path when the metadata has it. A row trained with several seeds
    (`seed_predictions`) has lines for each. All results must come from `split` (one notebook's rows
    share its test images). Raises ValueError for a result whose predictions are not one per test image."""
    test_ids = split.metadata.iloc[split.test]["image_id"].to_numpy()
    paths = _test_paths(split)
    tables = []
    for result in results:
        for seed, predicted in result.get("seed_predictions") or [(result["seed"], result["predicted"])]:
            if len(predicted) != len(test_ids):
                raise ValueError(f"{result['label']}: {len(predicted)} predictions for {len(test_ids)} test images of the split")
            tables.append(pd.DataFrame({"row": result["label"], **columns, "seed": seed, "backbone": result["backbone"], "image_id": test_ids, "true_mos": result["true"], "predicted_mos": predicted, **paths}))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["row", *columns, "seed", "backbone", "image_id", "true_mos", "predicted_mos", *paths])
