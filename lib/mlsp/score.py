"""Score new photos with a trained scorer: backbone + head, averaged over the 8 crops.

A scorer is a folder holding the head (`head.keras`) and `scorer.json` (backbone, weights, feature
kind, `max_side`: the largest image side of the set it was trained on). `mlsp score PATHS --model
FOLDER` and `score_paths()` write a CSV, one row per file, appended and flushed as each is scored.

Memory stays bounded: by default a photo is brought to the scorer's training size range (its longer
side at most `max_side`, as AVA's 800 px), which is both what the head has learned and affordable;
the 8 views then go through the network in batches sized to a memory budget. A photo that cannot be
scored (decode error, too small for the backbone, one view above the budget, a failed forward pass)
gets its reason in the `error` column; the run goes on. A prediction outside the scorer's score
scale (a linear head is unbounded) is kept as it is and flagged in the `out_of_range` column.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import pandas as pd

from mlsp import backbones, images, metrics
from mlsp.errors import first_line
from mlsp.features import FEATURE_KINDS, WIDE_SIZE, augmented_views, crop_size, mlsp_model, traced


def _openable_suffixes() -> frozenset[str]:
    """File suffixes of every format Pillow can open (not those it can only write, such as .pdf)."""
    from PIL import Image

    Image.init()
    return frozenset(suffix for suffix, format_name in Image.registered_extensions().items() if format_name in Image.OPEN)


IMAGE_SUFFIXES = _openable_suffixes()
COLUMNS = ["path", "predicted_mos", "error", "scored_width", "scored_height", "score_scale", "out_of_range"]
VIEWS = 8

# A scorer.json written before `max_side` was recorded: every scorer the kit trained until then was
# trained on AVA or on the embedded demo set, both at most 800 px on the longer side.
FALLBACK_MAX_SIDE = 800
# A scorer.json written before the score scale was recorded: the kit's scorers until then were
# trained on AVA or on the embedded AVA-format demo set, both scored 1 to 10.
FALLBACK_SCORE_SCALE = (1, 10)
DEFAULT_MEMORY_BUDGET_GB = 2.0

# Peak bytes per input pixel of one forward pass (preprocessing to float32 included), measured on
# 2 CPU cores with random weights, batches of 1-2 views of 1-2.6 MP, narrow and wide features
# alike (the design notes' 1.35 GB per megapixel for 8 views is ~220 B per view pixel with
# TensorFlow's own ~0.7 GB). The margin covers allocator slack and other threads' scratch space.
MEASURED_FORWARD_BYTES_PER_PIXEL = {"efficientnet_lite0": 156, "inception_v3": 141, "inception_resnet_v2": 150}
MEMORY_MARGIN = 1.5

# Exit statuses of `mlsp score` (documented in its --help and the README).
EXIT_ALL_SCORED = 0
EXIT_SOME_SKIPPED = 1
EXIT_USAGE = 2
EXIT_NONE_SCORED = 3
EXIT_INTERRUPTED = 130


class ScoringError(ValueError):
    """A problem found before any photo is scored (scorer folder, output file); names the path."""


@dataclass
class Scorer:
    """A loaded scorer. `forward`: float32 views [B, h, w, 3] -> {kind: features}; one trace for
    every batch size and image size."""

    folder: Path
    backbone: backbones.Backbone
    head: keras.Model
    kind: str
    max_side: int
    min_side: int
    forward: Callable
    views: int = VIEWS  # 8: mean over the 8 crops (heads trained on the stored views); 1: the whole image ("-aug" rows)
    score_scale: tuple = FALLBACK_SCORE_SCALE  # (score_min, score_max) of the MOS the head was trained on


def scale_text(scale) -> str:
    """A score scale as the output's score_scale column writes it: "1-10"."""
    return f"{scale[0]:g}-{scale[1]:g}"


def outside_scale(predicted: float, scale) -> bool:
    """Whether a prediction lies outside the score scale [score_min, score_max], as
    mlsp.metrics.out_of_range counts them (a linear head is not bounded; the value is kept, not clipped)."""
    return bool(metrics.out_of_range([predicted], *scale))


def save_scorer(
    folder, head_path, backbone: str, weights: str, kind: str, trained_on: str, max_side: int | None = None, views: int = VIEWS,
    score_min: float | None = None, score_max: float | None = None,
) -> Path:
    """Write a scorer folder: the head at `head_path` copied to head.keras, and scorer.json.

    max_side: the largest side (pixels) of the images the head was trained on; photos are brought
    to it before scoring. None records nothing, and scoring falls back to 800 px (AVA's largest
    side) with a note. views: 8 when the head was trained on the 8 stored views (scores are the mean
    over the 8 crops), 1 when on the whole image (the paper's "-aug" rows). score_min, score_max:
    the MOS scale of the training labels (metadata.json's; AVA 1-10, KonIQ-10k 1-5), so that scores
    are read on the right scale; None records none (scoring then assumes AVA's, with a note).
    Raises ValueError for max_side < 1, views other than 1 or 8, an unknown kind, or a scale that
    is not two finite numbers with score_min < score_max (or only one of them given).
    """
    if views not in (1, VIEWS):
        raise ValueError(f"views must be 1 (whole image) or {VIEWS} (the crops), got {views!r}")
    if kind not in FEATURE_KINDS:
        raise ValueError(f"kind '{kind}' is not one of {FEATURE_KINDS}")
    if max_side is not None and (isinstance(max_side, bool) or int(max_side) != max_side or max_side < 1):
        raise ValueError(f"max_side must be a positive integer or None, got {max_side!r}")
    if (score_min is None) != (score_max is None) or (score_min is not None and _scale_problem(score_min, score_max)):
        raise ValueError(f"score_min, score_max must be finite numbers with score_min < score_max (or both None), got {score_min!r}, {score_max!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    head = _load_head(head_path)
    head.save(folder / "head.keras")
    config = {"backbone": backbone, "weights": weights, "kind": kind, "input_mode": "original", "views": int(views), "trained_on": trained_on}
    if max_side is not None:
        config["max_side"] = int(max_side)
    if score_min is not None:
        config["score_min"], config["score_max"] = score_min, score_max
    (folder / "scorer.json").write_text(json.dumps(config, indent=2))
    return folder


def _scale_problem(score_min, score_max) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (score_min, score_max))
    return not (numbers and score_min < score_max)


def _load_head(path) -> keras.Model:
    # The heads' custom layers (ChannelSlice of Multi-3FC) are registered with Keras when mlsp.heads
    # is imported; a fresh process that only loads a file would not know them.
    import mlsp.heads  # noqa: F401
    import mlsp.train  # noqa: F401  (FusedAdam, the optimizer heads are saved with)

    return keras.models.load_model(path)


def read_config(model_dir) -> dict:
    """scorer.json of a scorer folder, checked; `max_side`, `score_min` and `score_max` are None when
    the file predates them.

    Raises ScoringError naming the file: missing, not JSON, a missing key, an unknown backbone or
    kind, a max_side that is not a positive integer, a score scale that is not score_min < score_max.
    """
    path = Path(model_dir) / "scorer.json"
    if not path.is_file():
        raise ScoringError(f"{path}: not found, so {model_dir} is not a scorer folder (the demo writes one to data/demo/scorer)")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ScoringError(f"{path}: cannot be read as JSON ({error})") from None
    missing = [key for key in ("backbone", "weights", "kind") if key not in config]
    if missing:
        raise ScoringError(f"{path}: missing {', '.join(missing)}")
    if config["backbone"] not in backbones.BACKBONES:
        raise ScoringError(f"{path}: unknown backbone '{config['backbone']}' (known: {', '.join(backbones.BACKBONES)})")
    if config["kind"] not in FEATURE_KINDS:
        raise ScoringError(f"{path}: kind '{config['kind']}' is not one of {FEATURE_KINDS}")
    max_side = config.get("max_side")
    if max_side is not None and (not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 1):
        raise ScoringError(f"{path}: max_side must be a positive integer, found {max_side!r}")
    views = config.get("views", VIEWS)
    if views not in (1, VIEWS) or isinstance(views, bool):
        raise ScoringError(f"{path}: views must be 1 (whole image) or {VIEWS} (the crops), found {views!r}")
    score_min, score_max = config.get("score_min"), config.get("score_max")
    if (score_min is not None or score_max is not None) and _scale_problem(score_min, score_max):
        raise ScoringError(f"{path}: score_min and score_max must be finite numbers with score_min < score_max, found {score_min!r}, {score_max!r}")
    return {**config, "max_side": max_side, "views": views, "score_min": score_min, "score_max": score_max}


def scoring_scale(config: dict, model_dir, note: bool = True) -> tuple:
    """(score_min, score_max) the scorer's predictions are on: scorer.json's, or AVA's 1-10
    (FALLBACK_SCORE_SCALE, with a note on stderr when `note`) for a scorer.json written before
    the scale was recorded."""
    if config["score_min"] is not None:
        return (config["score_min"], config["score_max"])
    if note:
        print(
            f"note: {Path(model_dir) / 'scorer.json'} records no score scale (written before it was); its scores are taken to be on "
            f"AVA's {scale_text(FALLBACK_SCORE_SCALE)} scale, as every scorer the kit trained until then. Re-save the scorer with "
            "save_scorer(..., score_min=..., score_max=...) to record its own.",
            file=sys.stderr,
        )
    return FALLBACK_SCORE_SCALE


def scoring_max_side(config: dict, model_dir) -> int:
    """The longest side photos are brought to: scorer.json's max_side, or FALLBACK_MAX_SIDE (with a
    note on stderr) for a scorer.json written before max_side was recorded."""
    if config["max_side"] is not None:
        return config["max_side"]
    print(
        f"note: {Path(model_dir) / 'scorer.json'} records no max_side (written before it was); photos are brought to at most "
        f"{FALLBACK_MAX_SIDE} px, AVA's largest side. Re-save the scorer with save_scorer(..., max_side=...) to record its own.",
        file=sys.stderr,
    )
    return FALLBACK_MAX_SIDE


def load_scorer(model_dir, cache_dir=None) -> Scorer:
    """Backbone, head and traced forward pass of a scorer folder. Raises ScoringError (see
    read_config; and a head whose input does not match the backbone's features)."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    max_side = scoring_max_side(config, model_dir)
    scale = scoring_scale(config, model_dir)
    head = _load_head(model_dir / "head.keras")
    try:
        backbone = backbones.load(config["backbone"], config["weights"], cache_dir=cache_dir)
    except (backbones.WeightsUnavailable, FileNotFoundError) as error:
        raise ScoringError(f"{model_dir}: cannot load its backbone: {error}") from None
    channels = sum(backbone.block_channels())
    features_shape = (channels,) if config["kind"] == "narrow" else (WIDE_SIZE, WIDE_SIZE, channels)
    if tuple(head.input_shape[1:]) != features_shape:
        raise ScoringError(
            f"{model_dir / 'head.keras'}: takes inputs of shape {tuple(head.input_shape[1:])}, but {config['backbone']}'s "
            f"{config['kind']} features have shape {features_shape} (a head of another backbone or kind?)"
        )
    forward = traced(mlsp_model(backbone, kinds=(config["kind"],)))
    min_side = backbones.min_image_side(config["backbone"], augment=config["views"] == VIEWS)
    return Scorer(model_dir, backbone, head, config["kind"], max_side, min_side, forward, config["views"], scale)


def collect(paths) -> list[Path]:
    """Image files under the given files and folders (folders: by the suffixes of the formats Pillow
    opens, recursively, sorted), each once, in the order given. A named file is kept whatever its
    suffix (or if missing), and so is a broken symbolic link found in a folder, so that its problem
    is reported rather than silently dropped."""
    found, seen = [], set()
    for path in map(Path, paths):
        members = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()) if path.is_dir() else [path]
        for member in members:
            key = os.path.abspath(member)
            if key not in seen:
                seen.add(key)
                found.append(member)
    return found


def scoring_side(size: tuple[int, int], max_side: int, min_side: int) -> int | None:
    """The longer side (pixels) to bring an image of `size` (width, height) to, or None to keep it.

    At most max_side, except that a long thin image keeps its shorter side at min_side or more
    (so a panorama stays scorable); never larger than the image.
    """
    longer, shorter = max(size), min(size)
    if longer <= max_side:
        return None
    keeps_min_side = math.ceil(min_side * longer / shorter) if shorter > 0 else longer
    side = max(max_side, keeps_min_side)
    return side if side < longer else None


def forward_bytes_per_pixel(backbone_name: str) -> float:
    """Bytes of memory per input pixel that a forward pass may need (measured, with a margin)."""
    measured = MEASURED_FORWARD_BYTES_PER_PIXEL.get(backbone_name, max(MEASURED_FORWARD_BYTES_PER_PIXEL.values()))
    return measured * MEMORY_MARGIN


def views_per_batch(backbone_name: str, view_pixels: int, memory_budget_bytes: float, views: int = VIEWS) -> int:
    """How many views (0 to `views`) of `view_pixels` pixels each fit the memory budget in one batch;
    0 when a single view does not."""
    return int(min(views, memory_budget_bytes // (forward_bytes_per_pixel(backbone_name) * view_pixels)))


class Skip(Exception):
    """One image cannot be scored; the message is the reason (the file is not part of it)."""


def checked_batch_size(scorer: Scorer, width: int, height: int, memory_budget_bytes: float) -> int:
    """Views per batch (1-8) for an image of width x height pixels. Raises Skip when the image is
    smaller than the backbone needs or one view alone does not fit the budget."""
    if min(height, width) < scorer.min_side:
        raise Skip(f"too small: {width}x{height}, the {scorer.backbone.name} scorer needs at least {scorer.min_side} px on the shorter side")
    crop_height, crop_width = crop_size(height, width) if scorer.views == VIEWS else (height, width)
    batch_size = views_per_batch(scorer.backbone.name, crop_height * crop_width, memory_budget_bytes, scorer.views)
    if batch_size == 0:
        needed = forward_bytes_per_pixel(scorer.backbone.name) * crop_height * crop_width / 1e9
        raise Skip(
            f"one view of {crop_width}x{crop_height} needs about {needed:.1f} GB, above the memory budget of "
            f"{memory_budget_bytes / 1e9:.1f} GB (raise --memory-budget, or score without --full-resolution)"
        )
    return batch_size


def score_image(scorer: Scorer, image: np.ndarray, memory_budget_bytes: float) -> float:
    """Predicted MOS of an RGB uint8 image [H, W, 3], taken as it is: the mean of the head's
    predictions over the 8 views, run in batches that fit the budget (or its prediction on the whole
    image, for a scorer whose head was trained on whole images).

    Raises Skip when the image is smaller than the backbone needs, when one view alone does not
    fit the budget, or when the forward pass fails.
    """
    batch_size = checked_batch_size(scorer, image.shape[1], image.shape[0], memory_budget_bytes)
    predictions = []
    try:
        for start in range(0, scorer.views, batch_size):
            views = augmented_views(image, range(start, min(VIEWS, start + batch_size))) if scorer.views == VIEWS else image[None]
            batch = scorer.backbone.preprocess(views)
            features = scorer.forward(batch)[scorer.kind]
            predictions.append(np.asarray(scorer.head.predict_on_batch(features)).reshape(-1))
    except Exception as error:  # TensorFlow raises many types (InvalidArgument, ResourceExhausted, ...)
        raise Skip(f"the forward pass failed ({first_line(error)})") from error
    predicted = float(np.mean(np.concatenate(predictions)))
    if math.isnan(predicted):  # written as an empty score with no error, it would read as neither scored nor skipped
        raise Skip("the head predicted NaN (not a number)")
    return predicted


def score_file(scorer: Scorer, path: Path, full_resolution: bool, memory_budget_bytes: float) -> dict:
    """One output row for one file: its score and scored size, or its error (never raises for a bad file)."""
    # absolute: a resume from another working directory must not take one file for another
    row = {"path": os.path.abspath(path), "predicted_mos": np.nan, "error": "", "scored_width": np.nan, "scored_height": np.nan,
           "score_scale": scale_text(scorer.score_scale), "out_of_range": None}
    try:
        size = images.read_size(path, apply_exif_orientation=True)
        side = None if full_resolution else scoring_side(size, scorer.max_side, scorer.min_side)
        checked_batch_size(scorer, *(images.target_size(size, side) if side else size), memory_budget_bytes)  # before decoding: a skipped photo costs nothing
        image = images.load_rgb(path, apply_exif_orientation=True, max_side=side)
        row["scored_height"], row["scored_width"] = image.shape[:2]
        row["predicted_mos"] = score_image(scorer, image, memory_budget_bytes)
        row["out_of_range"] = outside_scale(row["predicted_mos"], scorer.score_scale)
    except images.ImageError as error:
        row["error"] = error.reason
    except Skip as error:
        row["error"] = str(error)
    except MemoryError:
        row["error"] = "out of memory while decoding or scoring (lower --memory-budget, or score without --full-resolution)"
    except Exception as error:  # one file's surprise must not cost the rest of the run; its reason is kept
        row["error"] = f"unexpected error ({first_line(error)})"
    return row


class ScoresFile:
    """The output CSV, opened before any scoring; each row is appended and flushed as it comes.

    resume: keep the rows already scored (their paths are skipped), drop the rows that failed (those
    files are tried again); overwrite: start afresh. Neither: an existing file is refused.
    Raises ScoringError naming the path (missing directory, a directory, not writable, exists, not a
    scores CSV).
    """

    def __init__(self, path, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise ScoringError("--resume and --overwrite exclude each other")
        self.path = Path(path)
        self.done: dict[str, dict] = {}
        self.created = not self.path.exists()
        if self.path.is_dir():
            raise ScoringError(f"{self.path}: is a directory; --output needs a file name")
        if not self.path.parent.is_dir():
            raise ScoringError(f"{self.path}: cannot write the scores, directory {self.path.parent} does not exist")
        if self.path.exists() and not (resume or overwrite):
            raise ScoringError(f"{self.path}: exists; pass --resume to continue it (files scored in it are skipped) or --overwrite to replace it")
        self.kept: list[dict] = []  # rows of an older output with relative paths: kept, not trusted as done
        if resume and self.path.exists():
            self.done, self.kept = read_scored_rows(self.path)
        try:
            if resume:  # rewritten without its failed rows, so a retried file ends with one row
                temporary = self.path.with_name(f".{self.path.name}.resume")
                with open(temporary, "w", newline="", encoding="utf-8") as handle:
                    writer = csv.DictWriter(handle, COLUMNS)
                    writer.writeheader()
                    writer.writerows(_formatted(row) for row in [*self.kept, *self.done.values()])
                os.replace(temporary, self.path)
                self.handle = open(self.path, "a", newline="", encoding="utf-8")
            else:
                self.handle = open(self.path, "w", newline="", encoding="utf-8")
                csv.DictWriter(self.handle, COLUMNS).writeheader()
                self.handle.flush()
        except OSError as error:
            raise ScoringError(f"{self.path}: cannot write the scores ({error.strerror or error})") from None
        self.writer = csv.DictWriter(self.handle, COLUMNS)
        self.rows_written = 0

    def is_done(self, path) -> bool:
        return os.path.abspath(path) in self.done

    def append(self, row: dict) -> None:
        self.writer.writerow(_formatted(row))
        self.handle.flush()
        self.rows_written += 1

    def close(self) -> None:
        """Close; a file this run created and wrote no row to is removed (a run that found nothing
        to score, or stopped before its first row, leaves nothing that a rerun must --overwrite)."""
        self.handle.close()
        if self.created and self.rows_written == 0 and not self.done and not self.kept:
            self.path.unlink(missing_ok=True)


def _formatted(row: dict) -> dict:
    def number(value, pattern):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)

    return {
        "path": row["path"], "predicted_mos": number(row["predicted_mos"], "{:.4f}"), "error": row["error"] or "",
        "scored_width": number(row["scored_width"], "{:d}"), "scored_height": number(row["scored_height"], "{:d}"),
        "score_scale": row.get("score_scale") or "",  # rows of an output written before the column existed: unknown
        "out_of_range": {True: "true", False: "false"}.get(row.get("out_of_range"), ""),  # empty: not scored, or unknown
    }


def read_scored_rows(path) -> tuple[dict[str, dict], list[dict]]:
    """Rows of an existing scores CSV that hold a score: those with absolute paths by path, and those
    with relative paths (written by an older version, relative to a working directory nobody
    recorded) as a list, kept but never taken as done. Raises ScoringError when the file is not a
    scores CSV."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                return {}, []
            if not {"path", "predicted_mos"} <= set(reader.fieldnames):
                raise ScoringError(f"{path}: not a scores CSV written by mlsp score (columns {reader.fieldnames}); choose another --output")
            done, relative = {}, []
            for row in reader:
                try:
                    score = float(row.get("predicted_mos") or "nan")
                except ValueError:
                    continue
                if row.get("path") and math.isfinite(score) and not row.get("error"):
                    size = [_integer_or_nan(row.get(key)) for key in ("scored_width", "scored_height")]
                    kept = {"path": row["path"], "predicted_mos": score, "error": "", "scored_width": size[0], "scored_height": size[1],
                            "score_scale": row.get("score_scale") or "", "out_of_range": _flag(row.get("out_of_range"))}
                    if os.path.isabs(row["path"]):
                        done[row["path"]] = kept
                    else:
                        relative.append(kept)
            return done, relative
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ScoringError(f"{path}: cannot be read to resume ({error})") from None


def _flag(text) -> bool | None:
    """An out_of_range cell read back: True, False, or None (empty: an output written before the column existed)."""
    return {"true": True, "false": False}.get((text or "").strip().lower())


def _integer_or_nan(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return np.nan


def score_paths(
    paths,
    model_dir,
    output=None,
    progress: bool = True,
    cache_dir=None,
    resume: bool = False,
    overwrite: bool = False,
    full_resolution: bool = False,
    memory_budget_gb: float | None = None,
) -> pd.DataFrame:
    """Score every image file under `paths` with the scorer in `model_dir`.

    Returns one row per file found (columns COLUMNS; predicted_mos NaN and `error` set for a file
    that could not be scored; scored_width/height: the size the photo was scored at; out_of_range:
    True for a prediction outside the scorer's score scale, kept unclipped, None when not scored or
    unknown), rows taken over from the output by `resume` included; `attrs["already_scored"]` counts
    those, `attrs["out_of_range"]` the flagged rows (a warning line on stderr says how many, if any).
    output: CSV path, checked and opened before the model is loaded, each row flushed when scored;
    an interrupted run (KeyboardInterrupt propagates) keeps every row written.
    full_resolution: score at the stored size instead of bringing the photo to at most the
    scorer's max_side. memory_budget_gb: memory (GB, 1e9 bytes) for one batch of views; None:
    DEFAULT_MEMORY_BUDGET_GB. Raises ScoringError (scorer folder, output file, budget) before any scoring.
    """
    memory_budget_gb = DEFAULT_MEMORY_BUDGET_GB if memory_budget_gb is None else memory_budget_gb
    if not (memory_budget_gb > 0 and math.isfinite(memory_budget_gb)):
        raise ScoringError(f"--memory-budget must be a positive number of GB, got {memory_budget_gb}")
    config = read_config(model_dir)  # a wrong folder is reported before the output is touched
    files = collect(paths)
    if output is not None and os.path.abspath(output) in {os.path.abspath(path) for path in files}:
        raise ScoringError(f"{output}: is one of the files to score; choose another --output")
    scores_file = ScoresFile(output, resume=resume, overwrite=overwrite) if output is not None else None
    try:
        rows, already = [], 0
        pending = []
        for path in files:
            if scores_file is not None and scores_file.is_done(path):
                rows.append(scores_file.done[os.path.abspath(path)])
                already += 1
            else:
                pending.append(path)
        if pending:
            scorer = load_scorer(model_dir, cache_dir=cache_dir)
            iterator, report = pending, print
            if progress and len(pending) > 1:
                from tqdm import tqdm

                iterator, report = tqdm(pending, desc="scoring", unit="img"), tqdm.write  # lines above the bar, not through it
            for path in iterator:
                row = score_file(scorer, path, full_resolution, memory_budget_gb * 1e9)
                if scores_file is not None:
                    scores_file.append(row)
                if row["error"]:
                    report(f"skipped {path}: {row['error']}", file=sys.stderr)
                rows.append(row)
    finally:
        if scores_file is not None:
            scores_file.close()
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs["already_scored"] = already
    table.attrs["score_scale"] = scoring_scale(config, model_dir, note=False)
    outside = int((table["out_of_range"] == True).sum())  # noqa: E712 (None and False alike are not flagged)
    table.attrs["out_of_range"] = outside
    if outside:
        where = f"the out_of_range column of {output}" if output is not None else "the out_of_range column"
        print(
            f"warning: {outside} of {int(table['predicted_mos'].notna().sum())} predictions lie outside the scorer's "
            f"{scale_text(table.attrs['score_scale'])} score scale; they are kept, not clipped (see {where})",
            file=sys.stderr,
        )
    return table


def exit_status(table: pd.DataFrame) -> int:
    """0 when every file is scored, 1 when some were skipped, 3 when none was scored or none found."""
    scored = int(table["predicted_mos"].notna().sum())
    if len(table) and scored == len(table):
        return EXIT_ALL_SCORED
    return EXIT_SOME_SKIPPED if scored else EXIT_NONE_SCORED
