"""What each notebook parameter may hold: one rule per parameter name, as data (`RULES`).

A wrong value should stop `mlsp run` before any notebook starts, not deep inside one (or worse, let a
notebook "succeed" having done nothing, as a misspelled input mode in `passes` did). The type of a
value is checked against the notebook's default by mlsp.parameters; the rules here add what a type
cannot say: ranges, non-empty values, and names that must be among those the kit defines.

Enumerated names come from the modules that define them (mlsp.backbones, mlsp.features, mlsp.heads,
mlsp.experiments). Those modules import Keras and TensorFlow (~5 s), so a `Context` imports each one
only when a rule first asks for its names, and remembers the answer for the rest of the resolve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import import_module
from typing import Callable

from mlsp.paths import resolve as resolve_path

# Where each enumeration lives, read on first use: name in messages -> names the kit accepts.
ENUMERATIONS: dict[str, Callable[[], tuple[str, ...]]] = {
    "backbone": lambda: tuple(import_module("mlsp.names").BACKBONES),
    "input mode": lambda: tuple(import_module("mlsp.names").INPUT_MODES),
    "feature kind": lambda: tuple(import_module("mlsp.names").FEATURE_KINDS),
    "head": lambda: tuple(import_module("mlsp.names").HEADS),
    "embedded set shape": lambda: tuple(import_module("mlsp.embedded").SHAPES),
    "data format": lambda: tuple(import_module("mlsp.data").FORMATS),
    "Table 2 fine-tuning row": lambda: tuple(row.label for row in import_module("mlsp.names").TABLE2_FINETUNE_ROWS),
    "distribution mode": lambda: tuple(import_module("mlsp.names").STRATEGIES),
    "graph optimizer setting": lambda: tuple(import_module("mlsp.names").GRAPH_OPTIMIZER_CHOICES),
}


class Context:
    """What rules compare values with, for one resolve of one profile.

    profile: the profile folder's name. Enumerations are imported on first use and kept."""

    def __init__(self, profile: str):
        self.profile = profile
        self._names: dict[str, tuple[str, ...]] = {}

    def names(self, enumeration: str) -> tuple[str, ...]:
        """The names of one entry of ENUMERATIONS (KeyError for an unknown entry)."""
        if enumeration not in self._names:
            self._names[enumeration] = ENUMERATIONS[enumeration]()
        return self._names[enumeration]


def is_whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _listed(names) -> str:
    return ", ".join(str(name) for name in names)


def _duplicates(values: list) -> list:
    seen, repeated = [], []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.append(value)
    return repeated


# Each rule has `allowed(context) -> str`, what may be given, in words for the message, and
# `problem(value, context) -> str | None`: None when the value is fine, else what is wrong with it
# ("" when showing the value says it all). Values reach a rule already of the default's type.


@dataclass(frozen=True)
class Count:
    """A whole number >= minimum (epochs, batch sizes, image counts; 0 where "none" is meaningful)."""

    minimum: int = 1
    maximum: int | None = None

    def allowed(self, context: Context) -> str:
        return f"a whole number >= {self.minimum}" + (f" and <= {self.maximum}" if self.maximum is not None else "")

    def problem(self, value, context: Context) -> str | None:
        fits = is_whole_number(value) and value >= self.minimum and (self.maximum is None or value <= self.maximum)
        return None if fits else ""


@dataclass(frozen=True)
class Fraction:
    """A number between 0 and 1; each end is excluded unless a value there means something."""

    zero_allowed: bool = False
    one_allowed: bool = False

    def allowed(self, context: Context) -> str:
        return f"a number in {'[' if self.zero_allowed else '('}0, 1{']' if self.one_allowed else ')'}"

    def problem(self, value, context: Context) -> str | None:
        if not is_finite_number(value):
            return ""
        above_zero = value >= 0 if self.zero_allowed else value > 0
        below_one = value <= 1 if self.one_allowed else value < 1
        return None if above_zero and below_one else ""


@dataclass(frozen=True)
class Number:
    """A finite number of any sign (a score scale's ends and thresholds)."""

    def allowed(self, context: Context) -> str:
        return "a finite number"

    def problem(self, value, context: Context) -> str | None:
        return None if is_finite_number(value) else ""


@dataclass(frozen=True)
class PositiveNumber:
    """A finite number > 0 (learning rates)."""

    def allowed(self, context: Context) -> str:
        return "a finite number > 0"

    def problem(self, value, context: Context) -> str | None:
        return None if is_finite_number(value) and value > 0 else ""


@dataclass(frozen=True)
class Flag:
    def allowed(self, context: Context) -> str:
        return "true or false"

    def problem(self, value, context: Context) -> str | None:
        return None if isinstance(value, bool) else ""


@dataclass(frozen=True)
class Text:
    """A non-empty string, such as a folder (relative to the repository root or absolute)."""

    what: str = "text"

    def allowed(self, context: Context) -> str:
        return f"a non-empty {self.what}"

    def problem(self, value, context: Context) -> str | None:
        return None if isinstance(value, str) and value.strip() else ""


@dataclass(frozen=True)
class Choice:
    """One name of an enumeration."""

    enumeration: str

    def allowed(self, context: Context) -> str:
        return f"one of the {self.enumeration}s: {_listed(context.names(self.enumeration))}"

    def problem(self, value, context: Context) -> str | None:
        return None if value in context.names(self.enumeration) else ""


@dataclass(frozen=True)
class Choices:
    """A non-empty list of distinct names of an enumeration."""

    enumeration: str
    if_empty: str = ""  # what to do instead of giving an empty list, for the message

    def allowed(self, context: Context) -> str:
        advice = f"; {self.if_empty}" if self.if_empty else ""
        return f"a non-empty list of distinct {self.enumeration}s: {_listed(context.names(self.enumeration))}{advice}"

    def problem(self, value, context: Context) -> str | None:
        if not isinstance(value, list) or not value:
            return "" if isinstance(value, list) else "not a list"
        unknown = [item for item in value if item not in context.names(self.enumeration)]
        if unknown:
            return f"not a {self.enumeration}: {_listed(repr(item) for item in unknown)}"
        repeated = _duplicates(value)
        return f"given twice: {_listed(repr(item) for item in repeated)}" if repeated else None


@dataclass(frozen=True)
class Counts:
    """A list of distinct whole numbers >= minimum; `empty` says what an empty list means (None: refused)."""

    minimum: int = 1
    empty: str | None = None

    def allowed(self, context: Context) -> str:
        meaning = f", or [] for {self.empty}" if self.empty else ""
        return f"a {'' if self.empty else 'non-empty '}list of distinct whole numbers >= {self.minimum}{meaning}"

    def problem(self, value, context: Context) -> str | None:
        if not isinstance(value, list):
            return "not a list"
        if not value:
            return None if self.empty else ""
        wrong = [item for item in value if not (is_whole_number(item) and item >= self.minimum)]
        if wrong:
            return f"not allowed: {_listed(repr(item) for item in wrong)}"
        repeated = _duplicates(value)
        return f"given twice: {_listed(repr(item) for item in repeated)}" if repeated else None


@dataclass(frozen=True)
class Flags:
    """A non-empty list of distinct booleans (which augmentation settings to run)."""

    def allowed(self, context: Context) -> str:
        return "a non-empty list of distinct true/false values, e.g. [true, false]"

    def problem(self, value, context: Context) -> str | None:
        if not isinstance(value, list) or not value:
            return "" if isinstance(value, list) else "not a list"
        wrong = [item for item in value if not isinstance(item, bool)]
        if wrong:
            return f"not true or false: {_listed(repr(item) for item in wrong)}"
        return "given twice" if _duplicates(value) else None


@dataclass(frozen=True)
class Passes:
    """Feature extraction passes: a non-empty mapping of input mode to a non-empty list of feature kinds."""

    def allowed(self, context: Context) -> str:
        return (
            f"a non-empty mapping of input mode ({_listed(context.names('input mode'))}) to a non-empty list "
            f"of distinct feature kinds ({_listed(context.names('feature kind'))})"
        )

    def problem(self, value, context: Context) -> str | None:
        if not isinstance(value, dict) or not value:
            return "" if isinstance(value, dict) else "not a mapping"
        for mode, kinds in value.items():
            if mode not in context.names("input mode"):
                return f"{mode!r} is not an input mode"
            problem = Choices("feature kind").problem(kinds, context)
            if problem is not None:
                return f"{mode}: " + (problem or ("an empty list" if kinds == [] else "not a list"))
        return None


@dataclass(frozen=True)
class Weights:
    """A backbone's weights: Keras' or the kit's ImageNet weights, untrained ones, or a file."""

    def allowed(self, context: Context) -> str:
        return "'imagenet', 'random' or the path of an existing weights file (relative to the repository root or absolute)"

    def problem(self, value, context: Context) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return ""
        if value in ("imagenet", "random"):
            return None
        path = resolve_path(value)
        if path.is_dir():
            return f"{path} is a folder; give the weights file in it"
        return None if path.is_file() else f"no such file: {path}"


@dataclass(frozen=True)
class ProfileName:
    """The profile folder's own name: notebooks write to results/<profile>/, so another name would
    put this profile's results into another profile's folder."""

    def allowed(self, context: Context) -> str:
        return f"'{context.profile}', the profile folder's name (results go to results/<profile>/)"

    def problem(self, value, context: Context) -> str | None:
        return None if value == context.profile else ""


RULES = {
    # shared
    "profile": ProfileName(),
    "seed": Count(minimum=0, maximum=2**32 - 1),  # keras.utils.set_random_seed's range
    "ava_dir": Text("folder path"),
    "work_dir": Text("folder path"),
    # 00_data
    "generate_embedded": Flag(),
    "embedded_images": Count(),
    "embedded_min_side": Count(),
    "embedded_max_side": Count(),
    "embedded_shape": Choice("embedded set shape"),
    "embedded_test_fraction": Fraction(),
    "validation_fraction": Fraction(),
    "data_format": Choice("data format"),
    "labels_file": Text("file path"),  # null (the default) where the format has none: AVA
    "images_dir": Text("folder path"),
    # the MOS scale and the accuracy threshold; null (the default): the format's own (mlsp.data.FORMAT_SCALES)
    "score_min": Number(),
    "score_max": Number(),
    "accuracy_threshold": Number(),
    "test_fraction": Fraction(),
    "verify_images": Flag(),
    "apply_exif_orientation": Flag(),
    "min_side": Count(),
    # 01_extract_features
    "backbones": Choices("backbone"),
    "weights": Weights(),
    "passes": Passes(),
    "augmentation": Flags(),
    "shard_index": Count(minimum=0),
    "num_shards": Count(),
    "merge_shards": Flag(),
    "workers": Count(),
    "batch_images": Count(),
    "retry_failed": Flag(),
    # 02-05: training
    "backbone": Choice("backbone"),
    "learning_rate": PositiveNumber(),
    "drop_every": Count(),
    "patience": Count(),
    "max_epochs": Count(),
    "batch_size": Count(),
    "batch_norm_momentum": Fraction(),  # mlsp.heads; 0 would keep only the last batch's statistics, 1 never update them
    "epochs": Count(),
    "jit_compile": Flag(),
    "graph_optimizer": Choice("graph optimizer setting"),  # mlsp.train.configure_graph_optimizer
    "distribute": Choice("distribution mode"),  # "mirrored" without a visible GPU: mlsp.runner.check_devices, for the notebooks run
    "in_memory": Flag(),
    "finetune": Flag(),
    "finetune_rows": Choices("Table 2 fine-tuning row", if_empty="finetune: false skips fine-tuning"),
    "finetune_learning_rate": PositiveNumber(),
    "finetune_max_epochs": Count(),
    "finetune_batch_size": Count(),
    "test_crops": Count(),
    "seeds": Count(maximum=100),  # training runs per row on features (experiments.run_feature_row)
    "finetune_images_in_memory": Flag(),
    "save_scorer": Flag(),
    "input_mode": Choice("input mode"),
    "block_counts": Counts(empty="every k from 1 to all blocks"),
    # 06_failure_cases: the top fraction may be all test images
    "top_fraction": Fraction(one_allowed=True),
    "grid_count": Count(),
}

# Checks between two parameters of one notebook, on the merged values: (left, operator, right).
RELATIONS = [
    ("shard_index", "<", "num_shards"),
    ("embedded_min_side", "<=", "embedded_max_side"),
    ("score_min", "<", "score_max"),
    ("score_min", "<", "accuracy_threshold"),
    ("accuracy_threshold", "<", "score_max"),
]
COMPARISONS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
MIRRORED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


# Checks among several parameters that a comparison cannot express, on a notebook's merged values:
# each takes them and returns None, or (the keys involved, what is wrong). The message names the file
# that set the later-applied of those keys. Notebook 00 makes the same checks itself (mlsp.data), for
# a run started outside `mlsp run`; these call the same functions, so the two cannot disagree.
def data_sources(values: dict) -> tuple[list[str], str] | None:
    """data_format against labels_file, images_dir and generate_embedded (mlsp.data.check_sources)."""
    keys = ["data_format", "generate_embedded", "labels_file", "images_dir"]
    if not all(key in values for key in keys):
        return None
    try:
        import_module("mlsp.data").check_sources(*(values[key] for key in keys))
    except ValueError as error:
        return keys, str(error)
    return None


def score_scale(values: dict) -> tuple[list[str], str] | None:
    """data_format against the score scale: a csv states all three, AVA's ends stay 1 and 10 (mlsp.data.resolve_scale)."""
    keys = ["data_format", "score_min", "score_max", "accuracy_threshold"]
    if not all(key in values for key in keys):
        return None
    try:
        import_module("mlsp.data").resolve_scale(*(values[key] for key in keys))
    except ValueError as error:
        return keys, str(error)
    return None


CROSS_CHECKS = [data_sources, score_scale]


def data_inputs(values: dict) -> list[tuple[str, str]]:
    """(key, what is wrong) for each input file or folder of notebook 00 that is absent.

    Only for notebooks about to run (mlsp.runner.check_inputs): a profile whose data were read
    already may have moved them, and AVA's ava_dir may be filled by generate_embedded or be absent
    where only the later notebooks run (the paper profile's dry run without AVA)."""
    if values.get("data_format") in (None, "ava") or values.get("generate_embedded"):
        return []
    found = []
    for key, wanted, is_wanted in (("labels_file", "file", lambda path: path.is_file()), ("images_dir", "folder", lambda path: path.is_dir())):
        if not isinstance(values.get(key), str):
            continue
        path = resolve_path(values[key])
        try:
            if not is_wanted(path):
                other = " (it is a folder)" if path.is_dir() else " (it is a file)" if path.exists() else ""
                found.append((key, f"no such {wanted}: {path}{other}"))
        except OSError as error:  # a folder on its path that this user may not search
            found.append((key, f"{path} cannot be reached ({error.strerror or error}); check the permissions of its folders"))
    return found


INPUT_CHECKS = [data_inputs]
