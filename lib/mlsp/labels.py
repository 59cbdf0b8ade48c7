"""Data sets other than AVA: a labels CSV in KonIQ-10k's layout or a plain one, and a folder of images.

- "koniq10k": KonIQ-10k's `koniq10k_scores_and_distributions.csv`: image_name, c1 ... c5 (votes for
  scores 1 to 5), c_total, MOS (1-5), SD, MOS_zscore; the images in `1024x768/` (or `512x384/`).
  Its `koniq10k_distributions_sets.csv` reads too: there c1 ... c5 are fractions of c_total, MOS is
  on MOS_zscore's 0-100 scale (state it: score_min, score_max, accuracy_threshold) and `set`
  (training / validation / test) is the authors' split.
- "csv": `image` (a path relative to the images folder) and `mos`; optionally votes_1 ... votes_K
  (votes for scores 1 to K) and `set` (train / validation / test).
Column names match whatever their case; the set column may also be called split, subset or
partition; other columns, named or not (Excel's empty trailing ones), are ignored.

The separator is the one of comma, semicolon and tab that splits the header line (read with its
quotes, so a quoted column name may hold another) into the layout's required columns; where none
does, the one giving the most columns, and the error then names the missing column. A `;`- or
tab-separated file (a European Excel export) may write its numbers with decimal commas: there a
comma cannot separate fields. A comma-separated file may not ("1,500" may be a thousands separator).
A first line `sep=X` (which Excel writes in some exports) declares the separator X; UTF-8 byte-order
marks at the start are dropped, repeated ones too.

Image names are relative to images_dir and stay inside it: an absolute name, one that leads out
through ".." ("../a.jpg", "sub/../../a.jpg", "..\\a.jpg") or names images_dir itself, and one
holding a control character (a NUL byte, a CR or tab inside a quoted field) are rejected rows. A
symbolic link inside images_dir may point anywhere (people link big image folders in): the name,
not the file it resolves to, is what must stay inside. Names are normalised ("sub/../a.jpg" is
"a.jpg", "\\" is "/", a name in Unicode NFC finds its file saved in NFD), so differently written
duplicates are found; read_labelled also compares the files themselves (device and inode), so one
image reached under two names (a linked folder, a hard link) is a duplicate too.

Votes must agree with the rest of their row: not all zero; summing to c_total where both are given
(KonIQ's fractions after their conversion to counts); and, where the MOS scale is 1 to K for votes of
scores 1 to K (KonIQ's c1 ... c5 with its MOS on 1-5, or votes_1 ... votes_K with score_min 1 and
score_max K), the MOS within MOS_TOLERANCE of the votes' mean (mlsp.data.add_scores), or within half a
unit of the MOS's last written digit when that is more ("4" for a mean of 3.6). On any other scale
(KonIQ's sets file: MOS on MOS_zscore's 0-100, which no linear map of the mean gives) the MOS is not
compared: how it was made from the votes is not known.

The split is the file's set column where it has one (its validation images drawn from its train
images with the seed when it names none); without a set column it is drawn with the seed:
test_fraction of the images for test, validation_fraction of the rest for validation.

The rows end up in the same metadata CSV as AVA's (mlsp.data). Each row that cannot be used is
reported with its line and the column at fault and skipped, as AVA.txt's rows are; a file that cannot
be read as its format (absent, not UTF-8, a required column missing, no MOS inside the stated scale)
is one error naming the file; so is a file with more than a quarter of its rows rejected, once they
are reported (mlsp.data.check_rejected_share: it is most likely in another layout).
"""
from __future__ import annotations

import codecs
import csv
import io
import math
import os
import posixpath
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from mlsp import data
from mlsp.data import LABELS_ROW, EmptySetError, Problem, ScoreScale
from mlsp.paths import resolve

# A decimal number as people write them; float() would also take "nan", "inf", "1_000" and digits of
# other scripts, none of which is a score.
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# The same with a decimal comma, as a European Excel writes numbers into its ;-separated CSV export.
# Only there: in a comma-separated file a comma cannot be inside an unquoted number, and in a quoted
# one "1,500" may be a thousands separator.
DECIMAL_COMMA_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:,[0-9]*)?|,[0-9]+)(?:[eE][+-]?[0-9]+)?")
SET_NAMES = {"train": "train", "training": "train", "validation": "validation", "val": "validation", "test": "test"}
# Other names people give the set column; read as `set` (a file with two of them is refused).
SET_COLUMN_ALIASES = ("split", "subset", "partition")
# KonIQ-10k's fractions of c_total are rounded to 12 digits in its file; a row whose fractions miss 1
# by more than this is not a distribution.
FRACTION_TOLERANCE = 1e-3
# How far a MOS may lie from its votes' mean (both on 1 to K). KonIQ-10k writes the mean with 9
# decimals, people round to two or one: one decimal is off by up to 0.05. A wider gap is another
# image's row, or a MOS made otherwise (e.g. after dropping raters), and is worth a look.
MOS_TOLERANCE = 0.05
# The most votes one score of one image may have (and c_total): far above any rating study (AVA's
# images have ~200 votes, KonIQ's ~120), and far inside int64 when K of them are summed and weighted.
MAX_VOTES = 10**9
# Separators a labels file may use, the first preferred when two read the header equally well.
DELIMITERS = (",", ";", "\t")
# Neither a file name nor typed by anyone: a NUL byte, or a CR, LF or tab inside a quoted field.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Layout:
    """Which columns of a format hold what, spelled as the format does (matched whatever the case)."""

    image: str
    mos: str
    vote_pattern: str  # group 1: the score the column counts votes for
    total: str | None = None  # the number of votes (KonIQ: c_total)
    std: str | None = None  # the standard deviation of the votes (KonIQ: SD)
    fractions: bool = False  # votes may be fractions of `total` (KonIQ's sets file)
    set: str = "set"


LAYOUTS = {
    "koniq10k": Layout(image="image_name", mos="MOS", vote_pattern=r"c([0-9]+)", total="c_total", std="SD", fractions=True),
    "csv": Layout(image="image", mos="mos", vote_pattern=r"votes_([0-9]+)"),
}
LAYOUT_SUMMARIES = {"koniq10k": "image_name, MOS (and optionally c1 ... c5, c_total, SD, set)", "csv": "image, mos (and optionally votes_1 ... votes_K, set)"}


@dataclass
class Columns:
    """Where a file's header put each column of its layout (0-based indices, None when absent)."""

    names: list[str]
    image: int
    mos: int
    votes: list[int]
    total: int | None
    std: int | None
    set: int | None
    # Rows may stop after the last named column: Excel writes empty trailing columns ("image,mos,,")
    # into some rows and not others.
    named: int = 0

    def name(self, index: int) -> str:
        """How a message names a column: as the header writes it, and its position counting from 1."""
        return f"column {self.names[index]!r} ({index + 1})"


def _text(path: Path) -> str:
    """The file's text. UTF-8 byte-order marks at its start are dropped, also repeated ones (a file
    saved "with BOM" by a tool that kept the one it read). Raises ValueError naming the file (and the
    line and column where it can) for UTF-16/32 or non-UTF-8 text."""
    content = path.read_bytes()
    for mark, encoding in data._WIDE_BYTE_ORDER_MARKS:
        if content.startswith(mark):
            raise ValueError(f"{path}: the labels file is {encoding} text; save it as UTF-8")
    content = content.removeprefix(codecs.BOM_UTF8)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        line, line_start = content.count(b"\n", 0, error.start) + 1, content.rfind(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{path}, line {line}, column {error.start - line_start + 1}: not UTF-8 text "
            f"(byte 0x{content[error.start]:02x}); save the file as UTF-8"
        ) from None
    return text.lstrip("\ufeff")


# Excel's declaration of the separator, alone on the first line ("sep=;"); some tools quote it.
SEPARATOR_LINE = re.compile(r'"?sep=([^\r\n"])"?[ \t]*(\r\n|\r|\n|$)', re.IGNORECASE)


def _declared_separator(text: str) -> tuple[str, str | None]:
    """(the text, the separator its first line declares): Excel's "sep=X" line, which some of its
    exports write. The line is blanked, not removed, so later lines keep their numbers."""
    match = SEPARATOR_LINE.match(text)
    if match is None:
        return text, None
    return match.group(2) + text[match.end():], match.group(1)


def _delimiter(text: str, data_format: str) -> str:
    """The separator (of DELIMITERS) that splits the header line, quotes respected, into the most of
    the layout's required columns; then the one giving the most columns; then the first."""
    header = next((line for line in io.StringIO(text, newline="") if line.strip()), "")
    layout = LAYOUTS[data_format]
    required = {layout.image.lower(), layout.mos.lower()}

    def fit(candidate: str) -> tuple[int, int]:
        try:
            fields = next(csv.reader([header.rstrip("\r\n")], delimiter=candidate), [])
        except csv.Error:  # quoting this separator cannot read; _records names the line if it is chosen
            return -1, 0
        return len(required & {field.strip().lower() for field in fields}), len(fields)

    return max(DELIMITERS, key=fit)  # max keeps the first of equals: a comma over the others


def _records(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, fields) for each non-blank record of a CSV file's text.

    Windows line ends are fine. Raises ValueError naming the file and line for broken quoting.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    try:
        for fields in reader:
            if any(field.strip() for field in fields):
                yield start, fields
            start = reader.line_num + 1
    except csv.Error as error:
        raise ValueError(f"{path}, line {reader.line_num}: not readable as CSV ({error})") from None


def _find_columns(path: Path, line: int, header: list[str], data_format: str) -> Columns:
    """Locate the layout's columns in the header; raises ValueError naming what is missing or repeated."""
    layout = LAYOUTS[data_format]
    names = [name.strip() for name in header]
    seen = {}
    for index, name in enumerate(names):
        key = name.lower()
        if not key:  # an unnamed column (Excel's empty trailing ones) is ignored, as other unused columns are
            continue
        if key in seen:
            raise ValueError(f"{path}, line {line}: column {name!r} appears twice (columns {seen[key] + 1} and {index + 1})")
        seen[key] = index
    missing = [wanted for wanted in (layout.image, layout.mos) if wanted.lower() not in seen]
    if missing:
        shown = LAYOUT_SUMMARIES[data_format]
        raise ValueError(f"{path}, line {line}: no column {', '.join(repr(name) for name in missing)} (the header has: {', '.join(names)}); a {data_format} labels file has {shown}")
    votes = {int(match.group(1)): index for index, name in enumerate(names) if (match := re.fullmatch(layout.vote_pattern, name, re.IGNORECASE))}
    if votes and sorted(votes) != list(range(1, len(votes) + 1)):
        found = ", ".join(names[votes[score]] for score in sorted(votes))
        raise ValueError(f"{path}, line {line}: vote columns must count the scores 1 to K without gaps, found {found}")
    optional = {name: seen.get(name.lower()) if name else None for name in (layout.total, layout.std)}
    set_columns = [names[seen[key]] for key in (layout.set.lower(), *SET_COLUMN_ALIASES) if key in seen]
    if len(set_columns) > 1:
        raise ValueError(f"{path}, line {line}: columns {', '.join(repr(name) for name in set_columns)} would each be the set column; keep one, named {layout.set!r}")
    return Columns(
        names=names, image=seen[layout.image.lower()], mos=seen[layout.mos.lower()], votes=[votes[score] for score in sorted(votes)],
        total=optional[layout.total], std=optional[layout.std], set=seen[set_columns[0].lower()] if set_columns else None,
        named=max(seen.values()) + 1,
    )


def _parse(text: str, decimal_comma: bool = False) -> float | None:
    text = text.strip()
    if NUMBER.fullmatch(text):
        return float(text)
    if decimal_comma and DECIMAL_COMMA_NUMBER.fullmatch(text):
        return float(text.replace(",", "."))
    return None


def _number(text: str, decimal_comma: bool = False) -> float | None:
    """The number a field holds, or None; also None for one beyond floating point ("1e400" reads as
    infinity, which no score, spread or count is)."""
    value = _parse(text, decimal_comma)
    return value if value is not None and math.isfinite(value) else None


def _too_large(text: str, decimal_comma: bool = False) -> str:
    """A hint for a field written as a number that is no finite one ("1e400"); "" otherwise."""
    value = _parse(text, decimal_comma)
    return " (too large: beyond floating-point numbers)" if value is not None and not math.isfinite(value) else ""


def _count_problem(value: float | None) -> str:
    """Why a parsed vote count or c_total is not one ("" when it is), see MAX_VOTES."""
    if value is None or value < 0 or value != int(value):
        return ""
    return f" (over the maximum of {MAX_VOTES:,} votes)" if value > MAX_VOTES else ""


def _image_name(text: str) -> tuple[str | None, str | None]:
    """(the image's name relative to the images folder, in / form; or None and why it is refused).

    Refused: empty, absolute, leading out of the folder or naming the folder itself, holding a
    control character (see the module docstring)."""
    # the whitespace an editor leaves around a field goes; a control character anywhere else stays
    # to be refused (str.strip would also drop \x1c-\x1f at the ends)
    field = text.strip(" \t\r\n")
    control = CONTROL_CHARACTER.search(field)
    if control:
        # before any use as a path: open() and stat() raise a bare "embedded null byte" for a NUL
        return None, f"{field!r} holds a control character ({control.group()!r}), which no file name of a data set has"
    written = text.strip()
    name = written.replace("\\", "/")
    if not name:
        return None, "empty"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive:
        return None, f"{written!r} is an absolute path; give it relative to images_dir"
    # "sub/../a.jpg" and "./a.jpg" name the file "a.jpg" does: one spelling, so duplicates are found
    name = posixpath.normpath(name)
    if name == "..":
        return None, f"{written!r} leads out of images_dir (through '..'); give it relative to images_dir, inside it"
    if name.startswith("../"):
        return None, f"{written!r} leads out of images_dir (it is {name!r}); give it relative to images_dir, inside it"
    if name == ".":
        return None, f"{written!r} names images_dir itself, not an image in it"
    return name, None


def _vote_columns(columns: Columns) -> str:
    """How a message names the vote columns together, with their positions (listed when out of order)."""
    positions = [index + 1 for index in columns.votes]
    ranged = positions == list(range(positions[0], positions[-1] + 1))
    where = f"{positions[0]}-{positions[-1]}" if ranged else ", ".join(map(str, positions))
    return f"columns {columns.names[columns.votes[0]]} ... {columns.names[columns.votes[-1]]} ({where})"


def _votes(fields: list[str], columns: Columns, fractions_allowed: bool, decimal_comma: bool = False) -> tuple[list[int] | None, list[str]]:
    """The vote counts of a row (None without vote columns), and what is wrong with them."""
    if not columns.votes:
        return None, []
    values = [_number(fields[index], decimal_comma) for index in columns.votes]
    bad = [
        f"{columns.name(index)}: {fields[index].strip()!r} is not a number of votes{_too_large(fields[index], decimal_comma) if value is None else _count_problem(value)}"
        for index, value in zip(columns.votes, values)
        if value is None or value < 0 or value > MAX_VOTES
    ]
    if bad:
        return None, bad
    if all(value == int(value) for value in values):
        return [int(value) for value in values], []
    where = _vote_columns(columns)
    if not (fractions_allowed and columns.total is not None):
        return None, [f"{where}: {', '.join(fields[index].strip() for index in columns.votes)} are not whole vote counts"]
    total = _number(fields[columns.total], decimal_comma)
    if total is not None and 0 <= total <= MAX_VOTES and abs(sum(values) - 1) <= FRACTION_TOLERANCE:
        return [int(round(value * total)) for value in values], []  # KonIQ's sets file: fractions of c_total
    return None, [f"{where}: neither whole vote counts nor fractions of {columns.names[columns.total]} summing to 1 (they sum to {sum(values):.4g})"]


def _written_precision(text: str) -> float:
    """Half a unit of a number's last written digit ("4": 0.5, "3.7": 0.05); 0 in exponent notation."""
    match = re.fullmatch(r"[+-]?[0-9]*(?:[.,]([0-9]*))?", text.strip())
    return 0.5 * 10.0 ** -len(match.group(1) or "") if match else 0.0


def _disagreements(votes: list[int], total: float | None, mos: float | None, mos_text: str, columns: Columns, scale: ScoreScale) -> list[str]:
    """What is wrong between a row's valid vote counts and its valid c_total and MOS (module docstring)."""
    where = _vote_columns(columns)
    n_votes = sum(votes)
    if not n_votes:
        return [f"{where}: no votes (all are 0), so no MOS or spread can come from them"]
    reasons = []
    if total is not None and n_votes != total:
        reasons.append(f"{where}: the votes sum to {n_votes}, but {columns.name(columns.total)} says {total:g}")
    # Only where the MOS is on the votes' own 1..K: other scales may come from the votes in ways no
    # linear map recovers (KonIQ's 0-100 MOS comes from per-rater z-scores)
    if mos is not None and scale.score_min == 1 and scale.score_max == len(votes):
        mean = sum(score * count for score, count in enumerate(votes, start=1)) / n_votes
        tolerance = max(MOS_TOLERANCE, _written_precision(mos_text))
        if abs(mos - mean) > tolerance + 1e-9:  # 1e-9: a MOS written with exactly the allowed gap is float-rounded either way
            reasons.append(
                f"{columns.name(columns.mos)}: {mos:g} is not the mean of the votes for the scores 1-{len(votes)} in {where}, "
                f"{mean:.4g} (allowed difference {tolerance:g})"
            )
    return reasons


def read_labels(path, data_format: str, scale: ScoreScale) -> tuple[pd.DataFrame, list[Problem]]:
    """Read a labels file of the given format: (one row per usable image, rejected rows).

    Table columns: image_id (the image's path relative to the images folder, / separated, as
    written), votes_1 ... votes_K when the file has votes (counts), n_votes (from the votes, else
    KonIQ's c_total, else empty), mos (the file's, in the scale's units), mos_std (the file's SD, else
    from the votes, else empty), set ('train', 'validation', 'test', or None without a set column),
    line (where the row starts, counting from 1 with the header).
    Rejected (Problem of kind LABELS_ROW, its reason naming the column by name and position): rows
    with another number of fields than the header (trailing unnamed columns may be left out); an
    image name that is empty, absolute, leads out of the images folder ("../a.jpg"), names the
    folder itself or holds a control character; a MOS that is not a number or lies outside
    [score_min, score_max]; a number beyond floating point ("1e400") in any numeric column; bad votes
    (not whole non-negative counts up to MAX_VOTES, or KonIQ's fractions); a c_total over MAX_VOTES; votes
    that are all zero, do not sum to c_total, or whose mean disagrees with the MOS (on a 1..K scale,
    see the module docstring); an unknown set name; a repeated image (the first row is kept; names
    are compared normalised).
    The table's attrs["set_column"] is the set column's name as written, or None without one.
    Raises FileNotFoundError and PermissionError naming labels_file, and ValueError naming the file
    for an unknown format, an empty file, a header without the required columns or with two set
    columns, text that is not UTF-8, or when no MOS lies inside the scale (the scale parameters, not
    the rows, are then wrong).
    """
    path = Path(path)
    if data_format not in LAYOUTS:
        raise ValueError(f"no labels-file layout for data_format {data_format!r} (have: {', '.join(LAYOUTS)})")
    try:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: labels_file not found" + (" (it is a folder)" if path.is_dir() else ""))
        text = _text(path)
    except PermissionError as error:  # the file, or a folder on its path, that this user may not read
        raise PermissionError(f"{path}: labels_file cannot be read ({error.strerror}); check its permissions and its folder's") from None
    text, declared = _declared_separator(text)
    delimiter = declared or _delimiter(text, data_format)
    decimal_comma = delimiter != ","
    records = _records(path, text, delimiter)
    try:
        header_line, header = next(records)
    except StopIteration:
        raise ValueError(f"{path}: empty; expected a header line naming the columns") from None
    columns = _find_columns(path, header_line, header, data_format)
    layout = LAYOUTS[data_format]
    rows, problems, first_line, outside, inside = [], [], {}, [], 0
    for line, fields in records:
        image_id, reasons = None, []
        if not columns.named <= len(fields) <= len(columns.names):
            expected = f"{len(columns.names)}" if columns.named == len(columns.names) else f"{columns.named} to {len(columns.names)}"
            reasons.append(f"expected {expected} fields as in the header, found {len(fields)}")
        else:
            image_id, why = _image_name(fields[columns.image])
            if why:
                reasons.append(f"{columns.name(columns.image)}: {why}")
            mos = _number(fields[columns.mos], decimal_comma)
            if mos is None:
                written = fields[columns.mos].strip()
                hint = _too_large(written, decimal_comma) or (" (decimal commas are read only in ;- or tab-separated files)" if DECIMAL_COMMA_NUMBER.fullmatch(written) else "")
                reasons.append(f"{columns.name(columns.mos)}: {fields[columns.mos].strip()!r} is not a number{hint}")
            elif scale.score_min <= mos <= scale.score_max:
                inside += 1
            else:
                outside.append(mos)
                reasons.append(f"{columns.name(columns.mos)}: {mos:g} lies outside the score scale {scale.score_min:g}-{scale.score_max:g} (score_min, score_max)")
            votes, vote_problems = _votes(fields, columns, layout.fractions, decimal_comma)
            reasons += vote_problems
            std = None
            if columns.std is not None:
                std = _number(fields[columns.std], decimal_comma)
                if std is None or std < 0:
                    reasons.append(f"{columns.name(columns.std)}: {fields[columns.std].strip()!r} is not a standard deviation{_too_large(fields[columns.std], decimal_comma) if std is None else ''}")
            total = None
            if columns.total is not None:
                total = _number(fields[columns.total], decimal_comma)
                if total is None or total < 0 or total != int(total) or total > MAX_VOTES:
                    why = _too_large(fields[columns.total], decimal_comma) if total is None else _count_problem(total)
                    reasons.append(f"{columns.name(columns.total)}: {fields[columns.total].strip()!r} is not a whole number of votes{why}")
                    total = None
            if votes is not None:
                in_scale = mos if mos is not None and scale.score_min <= mos <= scale.score_max else None
                reasons += _disagreements(votes, total, in_scale, fields[columns.mos], columns, scale)
            chosen_set = None
            if columns.set is not None:
                written = fields[columns.set].strip()
                chosen_set = SET_NAMES.get(written.lower())
                if chosen_set is None:
                    reasons.append(f"{columns.name(columns.set)}: {written!r} is not a set name ({', '.join(SET_NAMES)})")
            if not reasons and _same_name(image_id) in first_line:
                reasons.append(f"{columns.name(columns.image)}: duplicate image (first at line {first_line[_same_name(image_id)]}, kept)")
        if reasons:
            problems.append(Problem(path.name, line, image_id, "; ".join(reasons), LABELS_ROW))
            continue
        first_line[_same_name(image_id)] = line
        rows.append({"image_id": image_id, "votes": votes, "total": total, "mos": mos, "std": std, "set": chosen_set, "line": line})
    if outside and not inside:  # the scale parameters are wrong, not every row
        raise ValueError(
            f"{path}: no MOS lies inside the stated scale {scale.score_min:g}-{scale.score_max:g}; the file's run from "
            f"{min(outside):g} to {max(outside):g}: set score_min, score_max and accuracy_threshold to the file's scale"
        )
    table = _table(rows, len(columns.votes))
    # assign_sets must know of the column even when no row survives to show it
    table.attrs["set_column"] = None if columns.set is None else columns.names[columns.set]
    table.attrs["image_column"] = columns.name(columns.image)  # for read_labelled's messages
    return table, problems


def _same_name(image_id: str) -> str:
    """One key for names that differ only in Unicode normalisation (macOS writes NFD, most editors NFC)."""
    return unicodedata.normalize("NFC", image_id)


def _image_file(images_dir: Path, image_id: str) -> Path:
    """The file an image name means: as written, else in the other Unicode normalisation form (a
    labels file typed on one system, images copied from macOS, or the other way round)."""
    path = images_dir / image_id
    if image_id.isascii() or os.path.lexists(path):  # lexists is False, not an error, behind an unsearchable folder
        return path
    for form in ("NFC", "NFD"):
        other = images_dir / unicodedata.normalize(form, image_id)
        if os.path.lexists(other):
            return other
    return path


def _drop_same_files(table: pd.DataFrame, files: list[Path], labels_name: str, problems: list[Problem]) -> tuple[pd.DataFrame, list[Path]]:
    """The rows whose file is not one an earlier row already names, and their files. Names are
    compared in read_labels; here the files themselves (device and inode, links followed), as a
    symbolic link to a folder or a file, or a hard link, gives one image a second name, and it could
    land in train and test with two MOS. Each later row becomes a LABELS_ROW problem (in `problems`,
    kept in line order) naming the first row's line and both names. A file that cannot be
    stat()ed is left to measure_images, which says why."""
    first, keep = {}, []
    column = table.attrs.get("image_column", "column 'image'")
    for position, (path, line, image_id) in enumerate(zip(files, table["line"], table["image_id"])):
        try:
            found = os.stat(path)
        except (OSError, ValueError):
            keep.append(position)
            continue
        identity = (found.st_dev, found.st_ino)
        if identity in first:
            first_line, first_id = first[identity]
            reason = f"{column}: duplicate image: {image_id!r} is the same file as {first_id!r} at line {first_line} (a symbolic or hard link; the first row is kept)"
            problems.append(Problem(labels_name, int(line), image_id, reason, LABELS_ROW))
            continue
        first[identity] = (int(line), image_id)
        keep.append(position)
    if len(keep) == len(files):
        return table, files
    problems.sort(key=lambda problem: (problem.line is None, problem.line or 0))
    attrs = dict(table.attrs)
    kept = table.iloc[keep].reset_index(drop=True)
    kept.attrs.update(attrs)
    return kept, [files[position] for position in keep]


def _table(rows: list[dict], n_levels: int) -> pd.DataFrame:
    """read_labels' table from its parsed rows."""
    vote_columns = [f"votes_{score}" for score in range(1, n_levels + 1)]
    table = pd.DataFrame({"image_id": pd.Series([row["image_id"] for row in rows], dtype=object)})
    if n_levels:
        counts = pd.DataFrame([row["votes"] for row in rows], columns=vote_columns, dtype=np.int64)
        table = pd.concat([table, counts], axis=1)
        from_votes = data.add_scores(table, vote_columns)
        n_votes, votes_std = from_votes["n_votes"].astype(float), from_votes["mos_std"]
    else:  # KonIQ's c_total without c1 ... c5, or nothing
        n_votes = pd.Series([row["total"] for row in rows], index=table.index, dtype=float)
        votes_std = pd.Series(np.nan, index=table.index)
    table["n_votes"] = n_votes.astype("Int64")  # whole numbers, empty where unknown
    table["mos"] = pd.Series([row["mos"] for row in rows], index=table.index, dtype=float)
    given_std = pd.Series([row["std"] for row in rows], index=table.index, dtype=float)
    table["mos_std"] = given_std.fillna(votes_std)
    table["set"] = pd.Series([row["set"] for row in rows], index=table.index, dtype=object)
    table["line"] = pd.Series([row["line"] for row in rows], index=table.index, dtype=np.int64)
    return table


def assign_sets(table: pd.DataFrame, seed: int, test_fraction: float, validation_fraction: float) -> tuple[pd.Series, str]:
    """'train', 'validation' or 'test' per row (named "set"), and how they were chosen, in words.

    The file's set column where it has one (table.attrs["set_column"], as read_labels sets it, or any
    set given); if it names no validation image, validation_fraction of its train images are drawn
    for validation with the seed. Without a set column, round(n x test_fraction) images are drawn for
    test and round(rest x validation_fraction) for validation. The words say which of these three
    happened, also for a file whose rows were all rejected. Empty sets are allowed here (see
    check_split). Raises ValueError for a fraction outside [0, 1].
    """
    for name, value in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    set_column = table.attrs.get("set_column")
    if set_column is not None or table["set"].notna().any():
        sets = table["set"].to_numpy(dtype=object).copy()
        named = f"the labels file's set column ({set_column!r})" if set_column is not None else "the labels file's set column"
        if (sets == "validation").any():
            return pd.Series(sets, index=table.index, name="set"), named
        how = f"{named}; validation drawn from its train images (validation_fraction {validation_fraction:g}, seed {seed})"
    else:
        # its own stream of the seed, so that the test draw and data.split's validation draw are independent
        rng = np.random.default_rng([seed, 1])
        sets = np.full(len(table), "train", dtype=object)
        sets[rng.choice(len(table), size=int(round(len(table) * test_fraction)), replace=False)] = "test"
        how = f"drawn with seed {seed}: test_fraction {test_fraction:g}, then validation_fraction {validation_fraction:g} of the rest"
    trainable = np.flatnonzero(sets == "train")
    rng = np.random.default_rng(seed)
    sets[rng.choice(trainable, size=int(round(len(trainable) * validation_fraction)), replace=False)] = "validation"
    return pd.Series(sets, index=table.index, name="set"), how


def check_split(sets: pd.Series, how: str, labels_name: str, problems: list[Problem], test_fraction: float, validation_fraction: float) -> None:
    """Raise EmptySetError, before any image is read, when the split leaves a set empty."""
    counts = sets.value_counts()
    from_file = how.startswith("the labels file")
    messages = []
    for name in data.SETS:
        if counts.get(name, 0):
            continue
        if len(sets) == 0:
            messages.append(f"the {name} set is empty: {labels_name} has no usable row")
        elif from_file and name != "validation":
            messages.append(f"the {name} set is empty: no usable row of {labels_name} has set {name!r}")
        elif name == "test":
            messages.append(f"the test set is empty: {len(sets)} usable rows x test_fraction {test_fraction:g} rounds to 0")
        elif name == "validation":
            messages.append(f"the validation set is empty: {int(counts.get('train', 0))} train images x validation_fraction {validation_fraction:g} rounds to 0")
        else:
            messages.append(f"the train set is empty: test_fraction {test_fraction:g} and validation_fraction {validation_fraction:g} leave no image for training")
    if not messages:
        return
    rejected = [problem for problem in problems if problem.kind == LABELS_ROW]
    context = f" ({labels_name}: {len(sets)} usable rows, {len(rejected)} rejected; split: {how})"
    if rejected:
        context += ". First rejected rows: " + "; ".join(f"line {problem.line}: {problem.reason}" for problem in rejected[:3])
    raise EmptySetError("; ".join(messages) + context, problems)


def read_labelled(
    data_format: str,
    labels_file,
    images_dir,
    scale: ScoreScale,
    seed: int,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.05,
    verify_images: bool = True,
    min_side: int = data.MIN_SIDE,
    workers: int = 8,
    progress: bool = True,
    apply_exif_orientation: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, list[Problem], str]:
    """Read a KonIQ-10k or plain-CSV data set: (metadata, unusable images, problems, split rule).

    labels_file, images_dir: paths relative to the repository root, or absolute. metadata: the
    columns of data.METADATA_COLUMNS with votes_1 ... votes_K for the file's K vote columns (none
    without), one row per usable image, MOS in the scale's units. Unusable images and problems as
    data.read_ava's (the unusable table's line is the labels file's). The split rule says in words
    how the sets were chosen (assign_sets).
    Raises EmptySetError before any image is read when a set would be empty, and DataError (with
    the problems) when more than a quarter of the rows are rejected or images_dir cannot be listed; a set
    emptied by unusable images is data.check_sets' business; DataError also when the usable images'
    MOS all lie on one side of the scale's accuracy_threshold (data.check_scale_fit, which also warns
    when they fill under a tenth of the scale). Also FileNotFoundError for a missing
    labels file or images folder, and ValueError (read_labels, assign_sets).
    """
    labels_file, images_dir = resolve(labels_file), resolve(images_dir)
    data.check_folder_readable(images_dir, "images_dir")  # first: is_dir() raises for a folder whose parent cannot be searched
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir}: images_dir not found" + (" (it is a file)" if images_dir.exists() else ""))
    table, problems = read_labels(labels_file, data_format, scale)
    files = [_image_file(images_dir, image_id) for image_id in table["image_id"]]
    table, files = _drop_same_files(table, files, labels_file.name, problems)  # before the split: one image, one set
    table["set"], how = assign_sets(table, seed, test_fraction, validation_fraction)
    data.check_rejected_share(labels_file, len(table), problems, LABELS_ROW, f"{data_format}: {LAYOUT_SUMMARIES[data_format]}")  # before the split: it says why a set may be empty
    check_split(table["set"], how, labels_file.name, problems, test_fraction, validation_fraction)
    vote_columns = [column for column in table.columns if column.startswith("votes_")]
    columns = ["image_id", *vote_columns, "n_votes", "mos", "mos_std", "width", "height", "set", "path"]
    metadata, unreadable = data.measure_images(table, files, columns, verify_images, min_side, workers, progress, apply_exif_orientation)
    try:
        data.check_scale_fit(metadata, scale, labels_file)
    except data.DataError as error:  # with the rows rejected so far, which the notebook saves
        error.problems = list(problems)
        raise
    return metadata, unreadable, problems, how
