"""The data layer: read AVA.txt, the official test list and the images; split; one metadata CSV.

AVA.txt rows are `index image_id c1 ... c10 tag1 tag2 challenge_id`, c_k being the number of votes
for score k. The official test list (`generic_test.jpgl`) is the test set; the rest is split 95% train
/ 5% validation with a seed. Every later notebook reads the metadata CSV written here, and the score
scale beside it (`metadata.json`, `score_scale`). Other data sets (KonIQ-10k, a plain CSV) are read by
mlsp.labels into the same metadata CSV.

Nothing is dropped silently: each rejected line of either file, each listed test id that AVA.txt
lacks and each unusable image is reported, and a split with an empty set is an error before any
metadata is written. Image ids are strings throughout ("000123" and "1e5" are ids, not numbers).
"""
from __future__ import annotations

import codecs
import errno
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlsp import images
from mlsp.paths import portable, resolve

VOTE_COLUMNS = [f"votes_{score}" for score in range(1, 11)]
# The metadata contract, AVA's columns. Other formats have votes_1 ... votes_K for their K score
# levels (KonIQ-10k: 5; a plain CSV: as many as it gives, or none, n_votes and mos_std then empty).
# `path`: the image file, relative to the repository root when inside it (mlsp.paths.portable).
METADATA_COLUMNS = ["image_id", *VOTE_COLUMNS, "n_votes", "mos", "mos_std", "width", "height", "set", "path"]
# What every later notebook may rely on; metadata CSVs written before `path` existed lack it.
REQUIRED_METADATA_COLUMNS = ["image_id", "n_votes", "mos", "mos_std", "width", "height", "set"]
UNREADABLE_COLUMNS = ["image_id", "set", "reason", "line", "path"]
AVA_FIELDS = ("index", "image_id", *(f"c{score}" for score in range(1, 11)), "tag1", "tag2", "challenge_id")
AVA_FORMAT = "index image_id c1 ... c10 tag1 tag2 challenge_id"
SETS = ("train", "validation", "test")
# An id names the file images/<id>.jpg: no path separators, no dots (so no ".."), nothing to quote.
IMAGE_ID = re.compile(r"[A-Za-z0-9_-]+")
# ASCII digits only (int() would also take "+5", "1_000" and other scripts' digits); 9 digits keep
# every count far inside int64 when summed.
NON_NEGATIVE_INTEGER = re.compile(r"[0-9]{1,9}")
# The same rules for a whole row at once, votes not all zero (the lookahead): the common case costs
# one match, not fifteen; _ava_row_problem says what is wrong with the others.
VALID_AVA_ROW = re.compile(r"\s*[0-9]{1,9}\s+[A-Za-z0-9_-]+(?!(?:\s+0+){10}\s)(?:\s+[0-9]{1,9}){13}\s*")
FILE_MISSING = "file missing"
# Problem kinds
AVA_ROW = "AVA.txt row rejected"
TEST_LIST_LINE = "test list line rejected"
TEST_ID_NOT_IN_AVA = "test id not in AVA.txt"
LABELS_ROW = "labels row rejected"  # a row of a KonIQ-10k or plain-CSV labels file (mlsp.labels)
HEADER_LINE = "no number in it: a header line"  # how AVA.txt's skipped header starts its reason
PROBLEM_COLUMNS = ["source", "line", "image_id", "kind", "reason"]
# Smaller images fit no backbone: the smallest `mlsp.backbones.min_input_side` of the kit's networks
# (Lite0's total stride; tests/test_images.py checks it). A constant, so that reading AVA needs no
# network; notebook 00 passes the largest `min_image_side` of its backbones (86 for the Inceptions).
MIN_SIDE = 32


@dataclass
class Problem:
    """A rejected line of AVA.txt or of the test list, or a listed test id that AVA.txt lacks.

    `line` counts from 1 as an editor does (CR, LF and CRLF each end a line); `kind` is AVA_ROW,
    TEST_LIST_LINE, TEST_ID_NOT_IN_AVA or LABELS_ROW (whose reason names the column at fault).
    """

    source: str
    line: int | None
    image_id: str | None
    reason: str
    kind: str


class DataError(ValueError):
    """A data set that cannot be used as a whole (the message says why and names the file or folder).

    `problems` holds what the readers rejected before it stopped, so a caller can still save it.
    """

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class EmptySetError(DataError):
    """The train, validation or test set would be empty; the message names the set and the counts."""


# A file with many of its rows rejected is read in the wrong layout (decimal commas, another
# separator, shifted columns), not a file with a few bad rows: more than this share of its rows
# rejected stops the run (DataError) rather than training on what happened to parse. A quarter stops
# a file that loses nearly half its rows (18 of 40 decimal commas in a tab-separated file) yet leaves
# room for the few bad rows of real files (AVA.txt: a handful of 255,000; the embedded set plants 2
# of 16 and more).
MAX_REJECTED_SHARE = 0.25


def check_rejected_share(path, n_usable: int, problems: list[Problem], kind: str, layout: str) -> None:
    """Raise DataError, naming the file, the counts and the first rejected lines, when more than
    MAX_REJECTED_SHARE of the data rows of `path` (problems of `kind`) were rejected; AVA.txt's
    skipped header line is not a data row.

    A file without any usable row is left to the split's EmptySetError, which says the same."""
    rejected = [problem for problem in problems if problem.kind == kind and not problem.reason.startswith(HEADER_LINE)]
    total = n_usable + len(rejected)
    if n_usable == 0 or len(rejected) <= MAX_REJECTED_SHARE * total:
        return
    first = "; ".join(f"line {problem.line}: {problem.reason}" for problem in rejected[:3])
    raise DataError(
        f"{path}: {len(rejected)} of its {total} rows were rejected, more than {MAX_REJECTED_SHARE:.0%}: is the file in the "
        f"expected layout ({layout})? First rejected: {first} (every rejected row is listed in malformed_rows.csv)",
        problems,
    )


def check_folder_readable(folder, parameter: str) -> None:
    """Raise DataError naming the folder and its parameter when its entries cannot be listed
    (permission denied): otherwise each image in it would be reported as one more unreadable file."""
    try:
        with os.scandir(folder) as entries:
            next(entries, None)
    except (FileNotFoundError, NotADirectoryError):
        return  # absent: the caller's business (labels: an error; AVA: every image missing, which check_sets reports)
    except OSError as error:
        raise DataError(f"{folder}: {parameter} cannot be read ({error.strerror or error}); check its permissions") from None


_WIDE_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),  # before UTF-16: FF FE starts both
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _text_lines(path: Path, what: str) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, None) per line, or (line number, None, why) for a line that is not UTF-8.

    A UTF-8 byte-order mark is dropped; CR, LF and CRLF each end a line. Raises FileNotFoundError,
    PermissionError naming the file, and ValueError for a UTF-16 or UTF-32 file (read as UTF-8, every
    line would be rejected) or one that is not a regular file (a FIFO, a device, a directory).
    """
    try:
        if not path.exists():
            raise FileNotFoundError(f"{path}: {what} not found")
        special = images.not_regular(path)  # read_bytes would wait forever on a FIFO, or never end on /dev/zero
        if special is not None:
            raise ValueError(f"{path}: the {what} is {special}")
        content = path.read_bytes()
    except PermissionError as error:  # the file, or a folder on its path, that this user may not read
        raise PermissionError(f"{path}: the {what} cannot be read ({error.strerror}); check its permissions and its folder's") from None
    for mark, encoding in _WIDE_BYTE_ORDER_MARKS:
        if content.startswith(mark):
            raise ValueError(f"{path}: the {what} is {encoding} text; save it as UTF-8 or ASCII")
    for number, raw in enumerate(content.removeprefix(codecs.BOM_UTF8).splitlines(), start=1):
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as error:
            yield number, None, f"not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1})"


def _ava_row_problem(fields: list[str]) -> str | None:
    """Why a row of AVA.txt, split into fields, is not a valid row; None if it is."""
    if len(fields) != len(AVA_FIELDS):
        hint = " (commas? fields are separated by spaces or tabs)" if len(fields) < len(AVA_FIELDS) and "," in "".join(fields) else ""
        return f"expected {len(AVA_FIELDS)} fields ({AVA_FORMAT}), found {len(fields)}{hint}"
    if not IMAGE_ID.fullmatch(fields[1]):
        return f"image id {fields[1]!r} is not a plain name of letters, digits, '_' or '-' (it names images/<id>.jpg)"
    not_integers = [f"{name}={value!r}" for name, value in zip(AVA_FIELDS, fields) if name != "image_id" and not NON_NEGATIVE_INTEGER.fullmatch(value)]
    if not_integers:
        return "not non-negative integers of at most 9 digits: " + ", ".join(not_integers)
    if not any(int(value) for value in fields[2:12]):
        return "no votes (c1 ... c10 are all 0)"
    return None


def parse_ava_txt(path) -> tuple[pd.DataFrame, list[Problem]]:
    """Vote counts and scores per image id, and every rejected row with its line number.

    A valid row has exactly the 15 fields of AVA_FIELDS, separated by spaces or tabs: a plain-name
    image id and non-negative integers elsewhere, with at least one vote. Rejected: any other number
    of fields, non-integers, ids that are not plain names, rows without votes, a header line, lines
    that are not UTF-8, and repeated ids (the first row is kept). Blank lines are skipped; a UTF-8
    byte-order mark and Windows line ends are fine.
    Returns (table: image_id (str), VOTE_COLUMNS, n_votes, mos, mos_std in [1, 10] score units,
    line (of AVA.txt); problems of kind AVA_ROW). Raises FileNotFoundError, and ValueError for a
    UTF-16/32 file or one that is not a regular file (a FIFO, a device, a directory).
    """
    path = Path(path)
    ids, votes, problems, first_line, seen_a_line = [], [], [], {}, False
    for number, text, undecodable in _text_lines(path, "AVA.txt"):
        if undecodable:
            problems.append(Problem(path.name, number, None, undecodable, AVA_ROW))
            seen_a_line = True
            continue
        fields = text.split()
        if not fields:
            continue
        image_id = fields[1] if len(fields) > 1 else None
        if len(fields) == len(AVA_FIELDS) and VALID_AVA_ROW.fullmatch(text):
            reason = None
        elif not seen_a_line and len(fields) > 1 and not any(NON_NEGATIVE_INTEGER.fullmatch(value) for value in fields):
            reason, image_id = f"{HEADER_LINE}, not data (skipped)", None
        else:
            reason = _ava_row_problem(fields)
        if reason is None and image_id in first_line:
            reason = f"duplicate image id (first row, line {first_line[image_id]}, kept)"
        seen_a_line = True
        if reason is not None:
            problems.append(Problem(path.name, number, image_id, reason, AVA_ROW))
            continue
        first_line[image_id] = number
        ids.append(image_id)
        votes.append(fields[2:12])
    counts = np.array(votes, dtype=str).astype(np.int64).reshape(-1, 10)  # one conversion for all rows
    table = pd.DataFrame(counts, columns=VOTE_COLUMNS)
    table.insert(0, "image_id", pd.Series(ids, dtype=str))
    table = add_scores(table)
    table["line"] = np.array([first_line[image_id] for image_id in ids], dtype=np.int64)
    return table, problems


def add_scores(table: pd.DataFrame, vote_columns: list[str] = VOTE_COLUMNS) -> pd.DataFrame:
    """n_votes, MOS and the standard deviation of the scores, from the vote histogram.

    vote_columns[k - 1] holds the votes for score k (AVA: 1 ... 10; KonIQ-10k: 1 ... 5)."""
    counts = table[vote_columns].to_numpy(dtype=np.float64)
    scores = np.arange(1, len(vote_columns) + 1, dtype=np.float64)
    n_votes = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a row without votes gets NaN, not a warning
        mos = counts @ scores / n_votes
        variance = (counts * (scores[None, :] - mos[:, None]) ** 2).sum(axis=1) / n_votes
    table = table.copy()
    table["n_votes"] = n_votes.astype(np.int64)
    table["mos"] = mos
    table["mos_std"] = np.sqrt(variance)
    return table


def read_test_list(path) -> tuple[dict[str, int], list[Problem]]:
    """The official test list: ({image id: its line number}, in file order; rejected lines).

    One id per line. Tolerated: spaces and tabs around it, blank lines, a UTF-8 byte-order mark,
    Windows line ends, and a `.jpg` suffix (the official file has bare ids; "123.jpg" names the same
    image as "123"). Rejected with their line number (kind TEST_LIST_LINE): lines with several
    fields, ids that are not plain names, repeated ids (the first is kept), lines that are not UTF-8.
    Raises FileNotFoundError, and ValueError for a UTF-16/32 file or one that is not a regular file.
    """
    path = Path(path)
    ids, problems = {}, []
    for number, text, undecodable in _text_lines(path, "test list"):
        if undecodable:
            problems.append(Problem(path.name, number, None, undecodable, TEST_LIST_LINE))
            continue
        fields = text.split()
        if not fields:
            continue
        image_id = fields[0][: -len(".jpg")] if fields[0].lower().endswith(".jpg") else fields[0]
        if len(fields) > 1:
            reason, image_id = f"expected one image id per line, found {len(fields)} fields: {text.strip()[:80]!r}", None
        elif not IMAGE_ID.fullmatch(image_id):
            reason = f"image id {fields[0]!r} is not a plain name of letters, digits, '_' or '-'"
        elif image_id in ids:
            reason = f"duplicate image id (first at line {ids[image_id]}, kept)"
        else:
            ids[image_id] = number
            continue
        problems.append(Problem(path.name, number, image_id, reason, TEST_LIST_LINE))
    return ids, problems


def _test_ids_not_in_ava(test_ids: dict[str, int], table: pd.DataFrame, ava_problems: list[Problem], test_list: str) -> list[Problem]:
    """A Problem per listed id without a valid AVA.txt row, saying whether its row was rejected."""
    rejected = {}
    for problem in ava_problems:
        if problem.image_id is not None:
            rejected.setdefault(problem.image_id, problem)
    in_ava = set(table["image_id"])
    problems = []
    for image_id, number in test_ids.items():
        if image_id in in_ava:
            continue
        row = rejected.get(image_id)
        reason = "not in AVA.txt" if row is None else f"its AVA.txt row (line {row.line}) was rejected: {row.reason}"
        problems.append(Problem(test_list, number, image_id, reason, TEST_ID_NOT_IN_AVA))
    return problems


def problems_table(problems: list[Problem], *kinds: str) -> pd.DataFrame:
    """The problems of the given kinds (all if none given) as a table of PROBLEM_COLUMNS; `line` stays an integer."""
    rows = [vars(problem) for problem in problems if not kinds or problem.kind in kinds]
    table = pd.DataFrame(rows, columns=PROBLEM_COLUMNS)
    table["line"] = table["line"].astype("Int64")
    return table


def load_rgb(path, apply_exif_orientation: bool = False, max_side: int | None = None) -> np.ndarray:
    """`mlsp.images.load_rgb`: RGB uint8 [H, W, 3] of any image file; raises mlsp.images.ImageError."""
    return images.load_rgb(path, apply_exif_orientation=apply_exif_orientation, max_side=max_side)


# What an OSError from stat() means for an image path, by errno (ENOENT and ENOTDIR are FILE_MISSING);
# any other is taken as a folder on the way that may not be searched (EACCES: the file may well be there).
_STAT_ERRNOS = {
    errno.ENAMETOOLONG: "the file name is too long (over 255 bytes for one name, or the whole path over the system's limit); shorten it",
    errno.ELOOP: "too many levels of symbolic links (a link that points back to itself, or a cycle of links) on its path",
}


def _stat_failure(error: OSError) -> str:
    """Why stat() failed on an image path, in words (see _STAT_ERRNOS)."""
    words = _STAT_ERRNOS.get(error.errno)
    if words is not None:
        return f"{error.strerror}: {words}"
    return f"{error.strerror or error} (a folder on its path cannot be searched: check its permissions)"


def image_info(path, verify: bool = True, min_side: int = MIN_SIDE, apply_exif_orientation: bool = False) -> tuple[int, int, str | None]:
    """(width, height, reason it is unusable or None), the size as `load_rgb` returns the pixels.

    Sizes come from the header; `verify` also decodes all the image data (truncated or corrupt
    files), JPEGs at a reduced scale (draft mode: every coefficient is still read, at half the cost). The
    reason is FILE_MISSING, "unreadable: <why>" (mlsp.images.ImageError's reason, which also covers
    more than mlsp.images.MAX_PIXELS pixels or mlsp.images.MAX_DECODE_BYTES; or the path's failure:
    a name too long, a symbolic-link loop, a folder that cannot be searched) or "too small (...)".
    Never raises for a bad file.
    """
    path = Path(path)
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0, FILE_MISSING
    except ValueError as error:  # a name no file can have ("embedded null byte"); mlsp.labels refuses these first
        return 0, 0, f"unreadable: the file name cannot be a path ({error})"
    except OSError as error:
        return 0, 0, f"unreadable: {_stat_failure(error)}"
    try:
        width, height = images.read_size(path, apply_exif_orientation=apply_exif_orientation)
        if verify:
            images.load_rgb(path, max_side=64)
    except images.ImageError as error:
        return 0, 0, f"unreadable: {error.reason}"
    if min(width, height) < min_side:
        return width, height, f"too small ({width}x{height}, need {min_side} px on each side)"
    return width, height, None


def split(table: pd.DataFrame, test_ids: set[str], seed: int, validation_fraction: float = 0.05) -> pd.Series:
    """'train', 'validation' or 'test' per row of `table` (same index), named "set".

    Rows whose image_id is in `test_ids` are test; of the others ("trainable"), round(n x
    validation_fraction) drawn with `seed` are validation and the rest train. Empty sets are
    allowed here (see build_metadata). Raises ValueError for a validation_fraction outside [0, 1].
    """
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction must lie in [0, 1], got {validation_fraction!r}")
    rng = np.random.default_rng(seed)
    sets = np.where(table["image_id"].isin(test_ids), "test", "train").astype(object)
    trainable = np.flatnonzero(sets == "train")
    n_validation = int(round(len(trainable) * validation_fraction))
    sets[rng.choice(trainable, size=n_validation, replace=False)] = "validation"
    return pd.Series(sets, index=table.index, name="set")


def _check_split(sets: pd.Series, validation_fraction: float, n_test_ids: int, problems: list[Problem], ava_txt: str, test_list: str) -> None:
    """Raise EmptySetError if the split of AVA.txt's valid rows leaves a set empty (before any image is read)."""
    counts = sets.value_counts()
    n_rows, n_test, n_validation = len(sets), int(counts.get("test", 0)), int(counts.get("validation", 0))
    n_trainable = n_rows - n_test
    absent = [problem.image_id for problem in problems if problem.kind == TEST_ID_NOT_IN_AVA]
    messages = []
    if n_test == 0:
        if n_test_ids == 0:
            messages.append(f"the test set is empty: {test_list} lists no valid image id")
        else:
            messages.append(f"the test set is empty: none of the {n_test_ids} ids listed in {test_list} has a valid row in {ava_txt} (first: {', '.join(absent[:5])})")
    if n_trainable == 0:
        messages.append(f"the train set is empty: {ava_txt} has no valid row" if n_rows == 0 else f"the train set is empty: all {n_rows} valid rows of {ava_txt} are in the test list")
    elif n_validation == n_trainable:
        messages.append(f"the train set is empty: validation_fraction {validation_fraction:g} puts all {n_trainable} trainable images in validation")
    if n_validation == 0:
        messages.append(f"the validation set is empty: {n_trainable} trainable images x validation_fraction {validation_fraction:g} rounds to 0")
    if not messages:
        return
    kinds = pd.Series([problem.kind for problem in problems], dtype=object).value_counts()
    context = (
        f" (trainable: valid rows of {ava_txt} whose id is not in {test_list}. {ava_txt}: {n_rows} valid rows, "
        f"{kinds.get(AVA_ROW, 0)} rejected; {test_list}: {n_test_ids} ids, {len(absent)} without a valid row in {ava_txt}, "
        f"{kinds.get(TEST_LIST_LINE, 0)} lines rejected)"
    )
    first = [f"{problem.source} line {problem.line}: {problem.reason}" for problem in problems if problem.kind != TEST_ID_NOT_IN_AVA][:3]
    if first:
        context += ". First rejected lines: " + "; ".join(first)
    raise EmptySetError("; ".join(messages) + context, problems)


def check_sets(metadata: pd.DataFrame, unreadable: pd.DataFrame) -> None:
    """Raise EmptySetError naming each of train, validation and test that has no usable image.

    `metadata` and `unreadable` are read_ava's first two results; the message counts the reasons the
    set's images were unusable (e.g. "file missing: 5").
    """
    messages = []
    for name in SETS:
        if (metadata["set"] == name).any():
            continue
        reasons = unreadable.loc[unreadable["set"] == name, "reason"]
        if reasons.empty:
            messages.append(f"the {name} set is empty")
            continue
        # group "too small (20x200, ...)" and "unreadable: OSError: ..." by their first words
        kinds = reasons.map(lambda reason: re.split(r"[:(]", reason)[0].strip()).value_counts()
        listed = ", ".join(f"{kind}: {count}" for kind, count in kinds.items())
        messages.append(f"the {name} set has no usable image: all {len(reasons)} of its images are unusable ({listed})")
    if messages:
        raise EmptySetError("; ".join(messages) + " (see the unreadable table)")


def read_ava(
    ava_dir,
    seed: int,
    ava_txt: str = "AVA.txt",
    test_list: str = "generic_test.jpgl",
    images_subdir: str = "images",
    validation_fraction: float = 0.05,
    verify_images: bool = True,
    min_side: int = MIN_SIDE,
    workers: int = 8,
    progress: bool = True,
    apply_exif_orientation: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, list[Problem]]:
    """Read an AVA folder: (metadata of usable images, unusable images, problems).

    min_side: the shortest side an image needs (pixels; notebook 00 takes the largest
    `mlsp.backbones.min_image_side` of its backbones). Sizes are those of the oriented image when
    `apply_exif_orientation` (off for AVA: its raters saw the stored pixels).

    metadata: METADATA_COLUMNS, one row per usable image (width, height in pixels; MOS in [1, 10]).
    unusable images: UNREADABLE_COLUMNS (reason: FILE_MISSING, unreadable or too small; line: of AVA.txt).
    problems: rejected lines of both files and listed test ids without a valid AVA.txt row.
    Raises EmptySetError before reading any image when the split of AVA.txt's valid rows leaves
    train, validation or test empty; a set emptied by unusable images is check_sets' business, so
    a caller can save the reports first. Raises DataError (with the problems) when the images
    folder cannot be listed, or when more than a quarter of AVA.txt's rows are rejected
    (check_rejected_share). Also FileNotFoundError and ValueError (see parse_ava_txt,
    read_test_list, split).
    """
    ava_dir = Path(ava_dir)
    check_folder_readable(ava_dir / images_subdir, "ava_dir's images folder")
    table, problems = parse_ava_txt(ava_dir / ava_txt)
    test_ids, test_list_problems = read_test_list(ava_dir / test_list)
    problems = problems + test_list_problems + _test_ids_not_in_ava(test_ids, table, problems, Path(test_list).name)
    table["set"] = split(table, set(test_ids), seed, validation_fraction)
    check_rejected_share(ava_dir / ava_txt, len(table), problems, AVA_ROW, f"AVA.txt: {AVA_FORMAT}")  # before the split: it says why a set may be empty
    _check_split(table["set"], validation_fraction, len(test_ids), problems, Path(ava_txt).name, Path(test_list).name)
    files = [image_path(ava_dir, image_id, images_subdir) for image_id in table["image_id"]]
    metadata, unreadable = measure_images(table, files, METADATA_COLUMNS, verify_images, min_side, workers, progress, apply_exif_orientation)
    return metadata, unreadable, problems


def measure_images(
    table: pd.DataFrame, files: list, columns: list[str], verify_images: bool = True, min_side: int = MIN_SIDE,
    workers: int = 8, progress: bool = True, apply_exif_orientation: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check each row's image file: (metadata of the usable ones, the unusable ones).

    table: one row per image with image_id, set, line (of the labels file) and the score columns;
    files[i] is row i's image. Adds width and height (pixels, as `load_rgb` returns the image) and
    path (mlsp.paths.portable) and keeps `columns`, in that order. The unusable table has
    UNREADABLE_COLUMNS, its reason from `image_info`.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        infos = pool.map(lambda path: image_info(path, verify=verify_images, min_side=min_side, apply_exif_orientation=apply_exif_orientation), files)
        if progress:
            from mlsp.quiet import progress_bar

            infos = progress_bar(infos, total=len(files), desc="reading image headers", unit="img")
        infos = list(infos)
    table = table.copy()
    table["width"] = np.array([width for width, _, _ in infos], dtype=np.int64)
    table["height"] = np.array([height for _, height, _ in infos], dtype=np.int64)
    table["path"] = pd.Series([portable(path) for path in files], index=table.index, dtype=object)
    reasons = pd.Series([reason for _, _, reason in infos], index=table.index, dtype=object)
    bad = reasons.notna()
    unreadable = table.loc[bad, ["image_id", "set", "line", "path"]].assign(reason=reasons[bad])[UNREADABLE_COLUMNS]
    return table.loc[~bad, columns].reset_index(drop=True), unreadable.reset_index(drop=True)


def build_metadata(ava_dir, seed: int, **options) -> tuple[pd.DataFrame, pd.DataFrame, list[Problem]]:
    """read_ava, then check_sets: the same three results, or EmptySetError naming the empty set."""
    metadata, unreadable, problems = read_ava(ava_dir, seed, **options)
    check_sets(metadata, unreadable)
    return metadata, unreadable, problems


def summarize(metadata: pd.DataFrame, unreadable: pd.DataFrame, problems: list[Problem], test_list: bool = True) -> dict[str, int]:
    """Counts of read_ava's (or mlsp.labels.read_labelled's) results, for the report.

    images / {set}_images: usable images; unreadable / {set}_unreadable: unusable ones (missing,
    unreadable or too small), {set}_missing_files among them; malformed_rows: rejected rows of the
    labels file (AVA.txt: duplicates and a header included); with `test_list` (AVA), the test list
    from listed ids to usable images: test_ids_listed >= test_ids_in_ava >= test_ids_with_image_file
    >= test_images.
    """
    counts = {"images": len(metadata)}
    counts.update({f"{name}_images": int((metadata["set"] == name).sum()) for name in SETS})
    counts["unreadable"] = len(unreadable)
    kinds = pd.Series([problem.kind for problem in problems], dtype=object).value_counts()
    counts["malformed_rows"] = int(kinds.get(AVA_ROW, 0) + kinds.get(LABELS_ROW, 0))
    if test_list:
        counts.update(_test_list_counts(counts["test_images"], unreadable, kinds))
    for name in SETS:
        in_set = unreadable["set"] == name
        counts[f"{name}_unreadable"] = int(in_set.sum())
        counts[f"{name}_missing_files"] = int((in_set & (unreadable["reason"] == FILE_MISSING)).sum())
    return counts


def _test_list_counts(test_images: int, unreadable: pd.DataFrame, kinds: pd.Series) -> dict[str, int]:
    """AVA's test list, from listed ids to usable images (see summarize)."""
    in_test = unreadable["set"] == "test"
    test_in_ava = test_images + int(in_test.sum())
    return {
        "test_ids_listed": test_in_ava + int(kinds.get(TEST_ID_NOT_IN_AVA, 0)),
        "test_ids_in_ava": test_in_ava,
        "test_ids_with_image_file": test_in_ava - int((in_test & (unreadable["reason"] == FILE_MISSING)).sum()),
        "test_list_rejected_lines": int(kinds.get(TEST_LIST_LINE, 0)),
    }


def image_path(ava_dir, image_id: str, images_subdir: str = "images") -> Path:
    """Where AVA's layout keeps an image: <ava_dir>/images/<id>.jpg."""
    return Path(ava_dir) / images_subdir / f"{image_id}.jpg"


def image_paths(table: pd.DataFrame, ava_dir=None, images_subdir: str = "images") -> list[Path]:
    """The image file of each row of a metadata (or predictions) table, as absolute paths.

    Its `path` column where it has one (every metadata CSV notebook 00 writes now); otherwise, for
    tables written before that column existed, AVA's layout under `ava_dir`. Raises ValueError when
    the table has neither a path column nor an ava_dir to fall back on.
    """
    if "path" in table.columns:
        return [resolve(path) for path in table["path"]]
    if ava_dir is None:
        raise ValueError(f"the table has no path column (columns: {', '.join(map(str, table.columns))}) and no ava_dir was given")
    return [image_path(ava_dir, image_id, images_subdir) for image_id in table["image_id"]]


def read_csv_with_ids(path) -> pd.DataFrame:
    """A CSV with an image_id column, the ids exactly as written (str).

    Left to itself pandas reads "000123" as 123, "1e5" as 100000.0 and "NA" or "nan" as missing:
    the id column is read a second time as plain text without missing-value markers, so only the
    other columns get pandas' usual parsing. Raises FileNotFoundError, and ValueError without an
    image_id column.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found")
    table = pd.read_csv(path, dtype={"image_id": str})
    if "image_id" not in table.columns:
        raise ValueError(f"{path}: no image_id column (columns: {', '.join(map(str, table.columns))})")
    table["image_id"] = pd.read_csv(path, usecols=["image_id"], dtype=str, keep_default_na=False)["image_id"]
    return table


def read_metadata(path) -> pd.DataFrame:
    """The metadata CSV of notebook 00 (REQUIRED_METADATA_COLUMNS and more, ids as str).

    Raises FileNotFoundError, and ValueError when a required column is missing.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: metadata CSV not found; run notebook 00_data first")
    table = read_csv_with_ids(path)
    missing = [column for column in REQUIRED_METADATA_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a metadata CSV of notebook 00_data, it lacks {', '.join(missing)}")
    return table


# --- the score scale, and the data formats ------------------------------------------------------

FORMATS = ("ava", "koniq10k", "csv")
DESCRIPTION_FILE = "metadata.json"  # beside metadata.csv: the format, the sources, the score scale


@dataclass(frozen=True)
class ScoreScale:
    """The MOS scale, score_min to score_max, and the binary-accuracy threshold: an image is "high
    quality" when its MOS > accuracy_threshold (AVA: 1 to 10, threshold 5, as in the paper).

    Raises ValueError unless all three are finite and score_min < accuracy_threshold < score_max.
    """

    score_min: float
    score_max: float
    accuracy_threshold: float

    def __post_init__(self):
        values = {"score_min": self.score_min, "score_max": self.score_max, "accuracy_threshold": self.accuracy_threshold}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.score_min < self.accuracy_threshold < self.score_max:
            raise ValueError(
                f"the scale needs score_min < accuracy_threshold < score_max, got {self.score_min:g}, {self.accuracy_threshold:g}, {self.score_max:g}"
                " (a threshold at or beyond an end makes every image the same class)"
            )

    def as_dict(self) -> dict[str, float]:
        return {"score_min": float(self.score_min), "score_max": float(self.score_max), "accuracy_threshold": float(self.accuracy_threshold)}

    @property
    def score_range(self) -> tuple[float, float]:
        """(score_min, score_max): what mlsp.metrics.evaluate counts predictions outside of."""
        return float(self.score_min), float(self.score_max)

    def describe(self) -> str:
        return f"MOS on {self.score_min:g}-{self.score_max:g}, accuracy at MOS > {self.accuracy_threshold:g}"


# Each format's own scale. AVA: votes 1-10 and the paper's threshold 5. KonIQ-10k: votes 1-5 (bad,
# poor, fair, good, excellent); MOS > 3 means "better than fair", the middle category, as MOS > 5 is
# above AVA's middle. A fixed point of the rating scale, not the data's median: the median would
# change with the split and make the classes equal by construction (majority accuracy 50%).
FORMAT_SCALES = {"ava": ScoreScale(1, 10, 5), "koniq10k": ScoreScale(1, 5, 3)}


def resolve_scale(data_format: str, score_min=None, score_max=None, accuracy_threshold=None) -> ScoreScale:
    """The scale a run uses: the notebook's parameters, None meaning the format's own (FORMAT_SCALES).

    AVA's MOS is a mean of votes 1-10, so its score_min and score_max can only be 1 and 10 (its
    threshold may move). Where score_min or score_max differ from the format's, the threshold must
    be given too; a plain CSV has no scale of its own, so it needs all three. Raises ValueError.
    """
    if data_format not in FORMATS:
        raise ValueError(f"data_format must be one of {', '.join(FORMATS)}, got {data_format!r}")
    own = FORMAT_SCALES.get(data_format)
    given = {"score_min": score_min, "score_max": score_max, "accuracy_threshold": accuracy_threshold}
    if own is None:
        absent = [name for name, value in given.items() if value is None]
        if absent:
            raise ValueError(f"data_format 'csv' has no scale of its own: give {', '.join(absent)} (your MOS's range, and the MOS above which an image counts as high quality)")
        return ScoreScale(score_min, score_max, accuracy_threshold)
    if data_format == "ava" and (score_min not in (None, 1) or score_max not in (None, 10)):
        raise ValueError(f"AVA's MOS is a mean of votes 1 to 10: leave score_min and score_max unset (or 1 and 10), got {score_min}, {score_max}")
    moved = (score_min is not None and score_min != own.score_min) or (score_max is not None and score_max != own.score_max)
    if moved and accuracy_threshold is None:
        raise ValueError(f"score_min/score_max differ from {data_format}'s own scale ({own.score_min:g}-{own.score_max:g}): give accuracy_threshold on your scale too")
    chosen = {name: own.as_dict()[name] if value is None else value for name, value in given.items()}
    return ScoreScale(**chosen)


# A MOS spread over less than this share of the stated scale is most likely on another scale (KonIQ's
# 1-5 MOS stated as 0-100: 4%); real data sets span far more (AVA's MOS 2-8 of 1-10, KonIQ's 1.1-4.3 of 1-5).
MIN_SCALE_COVERAGE = 0.10


def check_scale_fit(metadata: pd.DataFrame, scale: ScoreScale, source) -> None:
    """Stop when the usable images' MOS all lie on one side of the accuracy threshold, and print one
    line of warning when they fill less than MIN_SCALE_COVERAGE of the stated scale.

    With one class empty every binary accuracy, and the majority baseline, is a trivial 100%: the
    scale parameters do not describe the file (a MOS on 1-5 stated as 0-100 with threshold 50, as
    when KonIQ-10k's two files are mixed up). `source`: the labels file, named in the messages.
    Raises DataError naming accuracy_threshold, score_min/score_max and the MOS range found. Without
    usable images it does nothing (check_sets reports that).
    """
    mos = pd.to_numeric(metadata["mos"], errors="coerce").dropna()
    if mos.empty:
        return
    low, high = float(mos.min()), float(mos.max())
    found = f"the {len(mos)} usable images' MOS run from {low:g} to {high:g}; score_min {scale.score_min:g}, score_max {scale.score_max:g}"
    empty = "high" if high <= scale.accuracy_threshold else "low" if low > scale.accuracy_threshold else None
    if empty is not None:
        raise DataError(
            f"{source}: accuracy_threshold {scale.accuracy_threshold:g} leaves the {empty}-quality class empty ({found}), so "
            "every binary accuracy would be a trivial 100%. Is the scale the file's? (KonIQ-10k: MOS 1-5 in "
            "koniq10k_scores_and_distributions.csv, 0-100 in koniq10k_distributions_sets.csv.) Set score_min, score_max "
            "and accuracy_threshold to the file's scale"
        )
    coverage = (high - low) / (scale.score_max - scale.score_min)
    if coverage < MIN_SCALE_COVERAGE:
        print(f"warning: {source}: the MOS fill only {coverage:.1%} of the stated scale ({found}): is the scale the file's?")


def check_sources(data_format: str, generate_embedded: bool, labels_file, images_dir) -> None:
    """Raise ValueError for parameters that contradict the format (notebook 00, before any reading).

    "ava" reads ava_dir (AVA.txt, generic_test.jpgl, images/): labels_file and images_dir would be
    ignored, so they must stay unset. "koniq10k" and "csv" need both, and cannot be generated.
    """
    if data_format not in FORMATS:
        raise ValueError(f"data_format must be one of {', '.join(FORMATS)}, got {data_format!r}")
    if data_format == "ava":
        given = [name for name, value in (("labels_file", labels_file), ("images_dir", images_dir)) if value is not None]
        if given:
            raise ValueError(f"data_format 'ava' reads ava_dir (AVA.txt, generic_test.jpgl, images/); {' and '.join(given)} would be ignored: unset {'them' if len(given) > 1 else 'it'}, or set data_format to koniq10k or csv")
        return
    if generate_embedded:
        raise ValueError(f"generate_embedded writes the embedded set in AVA's layout; with data_format {data_format!r} set generate_embedded: false")
    absent = [name for name, value in (("labels_file", labels_file), ("images_dir", images_dir)) if value is None]
    if absent:
        raise ValueError(f"data_format {data_format!r} needs {' and '.join(absent)} (the labels CSV, and the folder its image names are relative to)")


PREVIOUS = ".previous"  # set_aside's mark: metadata.csv -> metadata.previous.csv


def set_aside(outputs, completed) -> tuple[list[Path], list[Path]]:
    """Clear a data run's earlier outputs before a failed run writes its reports, so that none of
    them describes other labels than the reports beside it (and no later notebook reads them).

    outputs: every file the run writes. completed: the one a run writes only when it succeeds
    (notebook 00's metadata.csv). With it present, the earlier outputs are a completed run's: each is
    renamed <stem>.previous<suffix> (replacing an older one), so nothing of it is lost. Without it
    they are the reports of a run that failed too, superseded by this one's: removed.
    Returns (set aside as their new paths, removed)."""
    outputs = [Path(path) for path in outputs]
    kept, removed = [], []
    completed_before = Path(completed).exists()
    for path in outputs:
        if not path.exists():
            continue
        if completed_before:
            kept.append(path.replace(path.with_name(path.stem + PREVIOUS + path.suffix)))
        else:
            path.unlink()
            removed.append(path)
    return kept, removed


def write_description(work_dir, data_format: str, scale: ScoreScale, **sources) -> Path:
    """Write metadata.json beside metadata.csv: the format, its sources (paths, split rule) and the
    score scale, so that later notebooks read the scale with `score_scale` rather than assume AVA's."""
    path = Path(work_dir) / DESCRIPTION_FILE
    record = {"data_format": data_format, **scale.as_dict(), **{key: str(value) for key, value in sources.items()}}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def score_scale(work_dir) -> ScoreScale:
    """The score scale of the metadata in `work_dir` (the folder of metadata.csv), from metadata.json.

    Metadata written before metadata.json existed is AVA's (or the embedded AVA-format set's): AVA's
    scale. Raises ValueError for a metadata.json without the scale or with an impossible one.
    """
    path = Path(work_dir) / DESCRIPTION_FILE
    if not path.exists():
        return FORMAT_SCALES["ava"]
    record = json.loads(path.read_text())
    try:
        return ScoreScale(record["score_min"], record["score_max"], record["accuracy_threshold"])
    except KeyError as error:
        raise ValueError(f"{path}: no {error.args[0]}; rerun notebook 00_data") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def data_format(work_dir) -> str:
    """The format notebook 00 read the metadata in `work_dir` from (metadata.json's data_format):
    "ava", "koniq10k" or "csv". Metadata written before metadata.json existed is AVA's. The paper's
    numbers are AVA's: later notebooks set them beside a run only when this is "ava"."""
    path = Path(work_dir) / DESCRIPTION_FILE
    if not path.exists():
        return "ava"
    found = json.loads(path.read_text()).get("data_format", "ava")
    if found not in FORMATS:
        raise ValueError(f"{path}: data_format {found!r} is none of {', '.join(FORMATS)}; rerun notebook 00_data")
    return found
