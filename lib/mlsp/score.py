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

Paths are written absolute, as text: a file name that is not valid UTF-8 (b'caf\\xe9.jpg' from a
Latin-1 zip) has each undecodable byte written as a backslash escape (`caf\\xe9.jpg`), so the CSV stays
UTF-8 and `--resume` recognises the file by the same escaped form (`path_text`). Every row records the
scorer that made it (`scorer`, `scorer_sha256`) and `full_resolution`; `--resume` refuses an output
whose rows another scorer or setting made. One run at a time may write an output: it holds an
exclusive lock on `<output>.lock` for the whole run.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
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
COLUMNS = ["path", "predicted_mos", "error", "scored_width", "scored_height", "score_scale", "out_of_range", "scorer", "scorer_sha256", "full_resolution"]
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
EXIT_CRASHED = 4  # an unexpected error stopped the run (a bug): rows written so far are kept
EXIT_INTERRUPTED = 130

# Folders and files other systems write beside photos, never photos themselves: macOS (AppleDouble
# "._x.jpg" resource forks, __MACOSX/ of its zips, .DS_Store, Spotlight and Trash folders), Synology
# (@eaDir/ thumbnails named like photos) and Windows (Thumbs.db, desktop.ini). A folder scan skips
# them; a file named on the command line is scored whatever its name.
SYSTEM_FOLDERS = frozenset({"__MACOSX", "@eaDir", ".AppleDouble", ".Spotlight-V100", ".Trashes", ".fseventsd"})
SYSTEM_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})  # compared lower-case


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
    score_min: float | None = None, score_max: float | None = None, selected_by: dict | None = None,
) -> Path:
    """Write a scorer folder: the head at `head_path` copied to head.keras, and scorer.json.

    max_side: the largest side (pixels) of the images the head was trained on; photos are brought
    to it before scoring. None records nothing, and scoring falls back to 800 px (AVA's largest
    side) with a note. views: 8 when the head was trained on the 8 stored views (scores are the mean
    over the 8 crops), 1 when on the whole image (the paper's "-aug" rows). score_min, score_max:
    the MOS scale of the training labels (metadata.json's; AVA 1-10, KonIQ-10k 1-5), so that scores
    are read on the right scale; None records none (scoring then assumes AVA's, with a note).
    selected_by: how the head was chosen among the rows trained (mlsp.experiments.selection_record:
    the criterion, its value, the row), recorded as is so a user can see it was not chosen on test data.
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
    if selected_by is not None:
        config["selected_by"] = selected_by
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


def is_system_file(name: str) -> bool:
    """Whether a file name is one of the metadata files other systems leave beside photos
    (AppleDouble "._x.jpg", .DS_Store, Thumbs.db, ...; see SYSTEM_FILES)."""
    return name.startswith("._") or name.lower() in SYSTEM_FILES


def scan(paths) -> tuple[list[Path], list[Path]]:
    """(image files, files passed over for their suffix) under the given files and folders.

    Folders are searched recursively, following links to folders (each real folder is read once, so
    a link cycle ends), for the suffixes of the formats Pillow opens; their files are sorted. The
    folders and files of SYSTEM_FOLDERS / is_system_file are skipped, and not counted. A named file is
    kept whatever its name or suffix (or if missing), and so is a broken symbolic link found in a
    folder, so that its problem is reported rather than silently dropped. Each file once, in the
    order given: a file reached under two names (links) is kept under the first."""
    found, passed_over, seen = [], [], set()
    for path in map(Path, paths):
        if path.is_dir():
            members, others = _folder_files(path)
            passed_over.extend(others)
        else:
            members = [path]
        for member in members:
            key = os.path.realpath(member)  # one file reached by two names (a linked folder given twice, a file link) once
            if key not in seen:
                seen.add(key)
                found.append(member)
    return found, passed_over


def collect(paths) -> list[Path]:
    """Image files under the given files and folders (see scan)."""
    return scan(paths)[0]


def _folder_files(folder: Path) -> tuple[list[Path], list[Path]]:
    images_found, others, visited = [], [], set()
    # Path.rglob does not follow links to folders (Python < 3.13), though a linked image folder is
    # how notebook 00 lets photos live elsewhere; os.walk does, and the real paths end link cycles.
    for here, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in visited:
            folders[:] = []
            continue
        visited.add(real)
        folders[:] = sorted(name for name in folders if name not in SYSTEM_FOLDERS)
        for name in files:
            if is_system_file(name):
                continue
            member = Path(here, name)
            (images_found if member.suffix.lower() in IMAGE_SUFFIXES else others).append(member)
    return sorted(images_found), sorted(others)


def path_text(path) -> str:
    """A path as the output's `path` column writes it: absolute, with each byte of the file name
    that is not valid UTF-8 written as a backslash escape (b'caf\\xe9.jpg' -> 'caf\\xe9.jpg'), so the
    CSV stays UTF-8 and a resume finds the same file by the same text. A backslash that is part of a
    name is written doubled ('a\\b.jpg' -> 'a\\\\b.jpg'): otherwise a file literally named 'caf\\xe9.jpg'
    would get the same text as b'caf\\xe9.jpg', and a resume would take one for the other."""
    return os.fsencode(os.path.abspath(path)).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def scorer_identity(model_dir) -> dict:
    """What the output's `scorer` and `scorer_sha256` columns record of a scorer folder: its absolute
    path and the first 16 hex digits of the sha256 of its scorer.json and head.keras (a moved or
    copied scorer keeps its hash; a retrained head does not). Raises ScoringError naming a missing
    or unreadable file."""
    digest = hashlib.sha256()
    for name in ("scorer.json", "head.keras"):
        file = Path(model_dir) / name
        try:
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as error:
            raise ScoringError(f"{file}: cannot be read ({error.strerror or error}), so {model_dir} is not a complete scorer folder") from None
    return {"scorer": path_text(model_dir), "scorer_sha256": digest.hexdigest()[:16]}


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
    row = {"path": path_text(path), "predicted_mos": np.nan, "error": "", "scored_width": np.nan, "scored_height": np.nan,
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
    files are tried again); overwrite: start afresh. Neither: an existing file is refused. A symbolic
    link as the output is followed: its target is written, the link kept. The run holds an exclusive
    lock on `<output>.lock` (flock: the system releases it when the process ends, however it ends)
    until close(), which removes it. identity: the `scorer`, `scorer_sha256` and `full_resolution`
    of this run's rows (scorer_identity); a resumed output whose scored rows another scorer or
    setting made is refused, and rows that record none (older outputs) are kept with a warning.
    Raises ScoringError naming the path (missing directory, a directory, not writable, exists, not a
    scores CSV, another run writing it, rows of another scorer).
    """

    def __init__(self, path, resume: bool = False, overwrite: bool = False, identity: dict | None = None):
        if resume and overwrite:
            raise ScoringError("--resume and --overwrite exclude each other")
        # the link's target is what the user means by the output; os.replace on the link would swap
        # the link itself for a regular file and leave the target stale
        # (a link to a pipe or a device, such as /dev/stdout, is written through as given)
        self.path = Path(os.path.realpath(path)) if os.path.islink(path) and (os.path.isfile(path) or not os.path.exists(path)) else Path(path)
        self.done: dict[str, dict] = {}
        self.created = not self.path.exists()
        if self.path.is_dir():
            raise ScoringError(f"{self.path}: is a directory; --output needs a file name")
        if not self.path.parent.is_dir():
            raise ScoringError(f"{self.path}: cannot write the scores, directory {self.path.parent} does not exist")
        if self.path.exists() and not (resume or overwrite):
            raise ScoringError(f"{self.path}: exists; pass --resume to continue it (files scored in it are skipped) or --overwrite to replace it")
        self.kept: list[dict] = []  # rows of an older output with relative paths: kept, not trusted as done
        self.lock_path = self.path.with_name(f"{self.path.name}.lock")
        self.lock = self._take_lock()
        try:
            if resume and self.path.exists():
                self.done, self.kept = read_scored_rows(self.path)
                if identity is not None:
                    check_identity(self.path, self.done.values(), identity)
            self._open(resume)
        except BaseException:
            self._release_lock()
            raise
        self.writer = csv.DictWriter(self.handle, COLUMNS)
        self.rows_written = 0

    def _take_lock(self) -> int | None:
        """The locked descriptor of `<output>.lock`; None, with a warning, where no lock file can be
        made (an output in a read-only folder, a bind-mounted file) or the output is a pipe or a
        device (nothing there to resume or to lose)."""
        if self.path.exists() and not self.path.is_file():
            return None
        while True:
            try:
                descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                    print(f"warning: {self.path}: no lock file can be made beside it ({error.strerror}), so a second `mlsp score` on this output would not be refused", file=sys.stderr)
                    return None
                raise ScoringError(f"{self.path}: cannot write the scores ({error.strerror or error} for the lock file {self.lock_path})") from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(descriptor)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ScoringError(
                        f"{self.path}: another `mlsp score` is writing it (it holds {self.lock_path}); wait for it to end or choose another --output"
                    ) from None
                raise ScoringError(f"{self.path}: cannot lock {self.lock_path} ({error.strerror or error})") from None
            # the run that held the lock may have removed the file between our open and flock: a lock
            # on that unlinked file would exclude nobody, so lock the file the name gives now
            try:
                current = os.path.samestat(os.fstat(descriptor), os.stat(self.lock_path))
            except FileNotFoundError:
                current = False
            if current:
                return descriptor
            os.close(descriptor)

    def _release_lock(self) -> None:
        if self.lock is None:
            return
        self.lock_path.unlink(missing_ok=True)  # while still held, so no run locks a file about to go
        os.close(self.lock)
        self.lock = None

    def _open(self, resume: bool) -> None:
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
        self.written = os.fstat(self.handle.fileno())

    def is_done(self, path) -> bool:
        return path_text(path) in self.done

    def append(self, row: dict) -> None:
        self.writer.writerow(_formatted(row))
        self.handle.flush()
        self.rows_written += 1

    def still_named(self) -> bool:
        """Whether the output path still names the file this run writes (another program may have
        replaced or removed it; rows appended since then are in a file nobody can open)."""
        try:
            return os.path.samestat(self.written, os.stat(self.path))
        except OSError:
            return False

    def close(self) -> None:
        """Close and release the lock; a file this run created and wrote no row to is removed (a run
        that found nothing to score, or stopped before its first row, leaves nothing that a rerun
        must --overwrite). Warns on stderr when the output path no longer names the file written."""
        try:
            self.handle.close()
            named = self.still_named()
            if not named:
                print(
                    f"warning: {self.path} is no longer the file this run wrote (another program replaced or removed it while scoring); "
                    f"the {self.rows_written} rows written this run may be lost: rerun with --resume",
                    file=sys.stderr,
                )
            elif self.created and self.rows_written == 0 and not self.done and not self.kept:
                self.path.unlink(missing_ok=True)
        finally:
            self._release_lock()


def check_identity(path, rows, identity: dict) -> None:
    """Refuse (ScoringError naming both scorers) when a scored row of the output at `path` was made
    by another scorer (scorer_sha256) or another full_resolution than `identity`; warn on stderr,
    one line, when some rows record none (written before the columns existed)."""
    unknown = 0
    for row in rows:
        if not row.get("scorer_sha256") or row.get("full_resolution") is None:
            unknown += 1
            continue
        if (row["scorer_sha256"], row["full_resolution"]) != (identity["scorer_sha256"], identity["full_resolution"]):
            raise ScoringError(
                f"{path}: its rows were scored by {_describe(row)}, this run would score with {_describe(identity)}; "
                "choose another --output, or --overwrite to score every file again"
            )
    if unknown:
        print(
            f"warning: {path}: {unknown} scored rows record no scorer (written before the kit recorded it); they are kept, "
            f"taken to be by {identity['scorer']}",
            file=sys.stderr,
        )


def _describe(identity) -> str:
    resolution = "--full-resolution" if identity["full_resolution"] else "brought to max_side"
    return f"{identity.get('scorer') or 'an unnamed scorer'} (sha256 {identity['scorer_sha256']}, {resolution})"


def _formatted(row: dict) -> dict:
    def number(value, pattern):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)

    def flag(value):
        return {True: "true", False: "false"}.get(value, "")  # empty: not scored, or unknown

    return {
        "path": row["path"], "predicted_mos": number(row["predicted_mos"], "{:.4f}"), "error": row["error"] or "",
        "scored_width": number(row["scored_width"], "{:d}"), "scored_height": number(row["scored_height"], "{:d}"),
        "score_scale": row.get("score_scale") or "",  # rows of an output written before the column existed: unknown
        "out_of_range": flag(row.get("out_of_range")),
        "scorer": row.get("scorer") or "", "scorer_sha256": row.get("scorer_sha256") or "", "full_resolution": flag(row.get("full_resolution")),
    }


def read_scored_rows(path) -> tuple[dict[str, dict], list[dict]]:
    """Rows of an existing scores CSV that hold a score: those with absolute paths by path, and those
    with relative paths (written by an older version, relative to a working directory nobody
    recorded) as a list, kept but never taken as done. Raises ScoringError when the file is not a
    scores CSV."""
    path = Path(path)
    try:
        # utf-8-sig: a scores CSV that a spreadsheet re-saved starts with a byte-order mark, which plain
        # UTF-8 would read into the first column's name
        with open(path, newline="", encoding="utf-8-sig") as handle:
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
                            "score_scale": row.get("score_scale") or "", "out_of_range": _flag(row.get("out_of_range")),
                            "scorer": row.get("scorer") or "", "scorer_sha256": row.get("scorer_sha256") or "",
                            "full_resolution": _flag(row.get("full_resolution"))}
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

    Returns one row per file found (columns COLUMNS; path: path_text, absolute with undecodable
    bytes escaped; predicted_mos NaN and `error` set for a file that could not be scored;
    scored_width/height: the size the photo was scored at; out_of_range: True for a prediction
    outside the scorer's score scale, kept unclipped, None when not scored or unknown; scorer,
    scorer_sha256: scorer_identity; full_resolution: the setting), rows taken over from the output by `resume` included; `attrs["already_scored"]` counts
    those, `attrs["out_of_range"]` the flagged rows (a warning line on stderr says how many, if any).
    output: CSV path, checked and opened before the model is loaded, each row flushed when scored;
    an interrupted run (KeyboardInterrupt propagates) keeps every row written.
    full_resolution: score at the stored size instead of bringing the photo to at most the
    scorer's max_side. memory_budget_gb: memory (GB, 1e9 bytes) for one batch of views; None:
    DEFAULT_MEMORY_BUDGET_GB. Files in the folders passed over for their suffix are counted in one
    note on stderr. Raises ScoringError (scorer folder, output file, budget, another run writing the
    output, a resumed output scored by another scorer or full_resolution) before any scoring.
    """
    memory_budget_gb = DEFAULT_MEMORY_BUDGET_GB if memory_budget_gb is None else memory_budget_gb
    if not (memory_budget_gb > 0 and math.isfinite(memory_budget_gb)):
        raise ScoringError(f"--memory-budget must be a positive number of GB, got {memory_budget_gb}")
    config = read_config(model_dir)  # a wrong folder is reported before the output is touched
    identity = {**scorer_identity(model_dir), "full_resolution": bool(full_resolution)}
    files, passed_over = scan(paths)
    if passed_over:
        print(f"note: {len(passed_over)} file{'s' if len(passed_over) > 1 else ''} in the folders skipped for their suffix (not an image type Pillow opens); first: {path_text(passed_over[0])}",
              file=sys.stderr)
    if output is not None and os.path.realpath(output) in {os.path.realpath(path) for path in files}:
        raise ScoringError(f"{output}: is one of the files to score; choose another --output")
    scores_file = ScoresFile(output, resume=resume, overwrite=overwrite, identity=identity) if output is not None else None
    try:
        rows, already = [], 0
        pending = []
        for path in files:
            if scores_file is not None and scores_file.is_done(path):
                rows.append(scores_file.done[path_text(path)])
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
                row = {**score_file(scorer, path, full_resolution, memory_budget_gb * 1e9), **identity}
                if scores_file is not None:
                    scores_file.append(row)
                if row["error"]:
                    report(f"skipped {os.fsencode(path).decode('utf-8', 'backslashreplace')}: {row['error']}", file=sys.stderr)
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
