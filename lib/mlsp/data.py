"""The AVA data layer: read AVA.txt, the official test list and the images; split; one metadata CSV.

AVA.txt rows are `index image_id c1 ... c10 tag1 tag2 challenge_id`, c_k being the number of votes
for score k. The official test list (`generic_test.jpgl`) is the test set; the rest is split 95% train
/ 5% validation with a seed. Every later notebook reads the metadata CSV written here.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFile

from mlsp import images

VOTE_COLUMNS = [f"votes_{score}" for score in range(1, 11)]
METADATA_COLUMNS = ["image_id", *VOTE_COLUMNS, "n_votes", "mos", "mos_std", "width", "height", "set"]
SCORES = np.arange(1, 11, dtype=np.float64)
# Smaller images are excluded for every backbone: the smallest `mlsp.backbones.min_input_side` of
# the kit's networks (Lite0's total stride; the Inceptions need 75, 86 with crops: checked per
# backbone at extraction and scoring, since the metadata is shared by all backbones).
MIN_SIDE = 32

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is an error, not a grey band


@dataclass
class Problem:
    source: str
    line: int | None
    image_id: str | None
    reason: str


def parse_ava_txt(path) -> tuple[pd.DataFrame, list[Problem]]:
    """Vote counts per image id; malformed rows and duplicate ids are reported with their line number."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: AVA.txt not found")
    ids, votes, problems, seen = [], [], [], set()
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 12:
                problems.append(Problem(path.name, line_number, fields[1] if len(fields) > 1 else None, f"expected at least 12 fields, found {len(fields)}"))
                continue
            image_id = fields[1]
            try:
                counts = [int(value) for value in fields[2:12]]
            except ValueError:
                problems.append(Problem(path.name, line_number, image_id, "vote counts are not integers"))
                continue
            if min(counts) < 0 or sum(counts) == 0:
                problems.append(Problem(path.name, line_number, image_id, "vote counts are negative or all zero"))
                continue
            if image_id in seen:
                problems.append(Problem(path.name, line_number, image_id, "duplicate image id (first row kept)"))
                continue
            seen.add(image_id)
            ids.append(image_id)
            votes.append(counts)
    table = pd.DataFrame(np.asarray(votes, dtype=np.int64).reshape(-1, 10), columns=VOTE_COLUMNS)
    table.insert(0, "image_id", ids)
    return add_scores(table), problems


def add_scores(table: pd.DataFrame) -> pd.DataFrame:
    """n_votes, MOS and the standard deviation of the scores, from the vote histogram."""
    counts = table[VOTE_COLUMNS].to_numpy(dtype=np.float64)
    n_votes = counts.sum(axis=1)
    mos = counts @ SCORES / n_votes
    variance = (counts * (SCORES[None, :] - mos[:, None]) ** 2).sum(axis=1) / n_votes
    table = table.copy()
    table["n_votes"] = n_votes.astype(np.int64)
    table["mos"] = mos
    table["mos_std"] = np.sqrt(variance)
    return table


def read_id_list(path) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: test list not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def load_rgb(path, apply_exif_orientation: bool = False, max_side: int | None = None) -> np.ndarray:
    """`mlsp.images.load_rgb`: RGB uint8 [H, W, 3] of any image file; raises mlsp.images.ImageError."""
    return images.load_rgb(path, apply_exif_orientation=apply_exif_orientation, max_side=max_side)


def image_info(path, verify: bool = True, min_side: int = MIN_SIDE, apply_exif_orientation: bool = False) -> tuple[int, int, str | None]:
    """(width, height, reason it is unusable or None), the size as `load_rgb` returns the pixels.

    Sizes come from the header; `verify` also decodes all the image data (truncated or corrupt
    files), JPEGs at a reduced scale (draft mode: every coefficient is still read, at half the cost). The
    reason is "file missing", "unreadable: <why>" (mlsp.images.ImageError's reason, which also covers
    more than mlsp.images.MAX_PIXELS pixels) or "too small (...)". Never raises for a bad file.
    """
    path = Path(path)
    if not path.exists():
        return 0, 0, "file missing"
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
    rng = np.random.default_rng(seed)
    sets = np.where(table["image_id"].isin(test_ids), "test", "train").astype(object)
    trainable = np.flatnonzero(sets == "train")
    n_validation = int(round(len(trainable) * validation_fraction))
    sets[rng.choice(trainable, size=n_validation, replace=False)] = "validation"
    return pd.Series(sets, index=table.index, name="set")


def build_metadata(
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
) -> tuple[pd.DataFrame, pd.DataFrame, list[Problem]]:
    """(metadata of usable images, unreadable images with reasons, malformed rows)."""
    ava_dir = Path(ava_dir)
    table, problems = parse_ava_txt(ava_dir / ava_txt)
    test_ids = set(read_id_list(ava_dir / test_list))
    paths = [ava_dir / images_subdir / f"{image_id}.jpg" for image_id in table["image_id"]]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        infos = pool.map(lambda path: image_info(path, verify=verify_images, min_side=min_side), paths)
        if progress:
            from tqdm import tqdm

            infos = tqdm(infos, total=len(paths), desc="reading image headers", unit="img")
        infos = list(infos)
    table["width"] = [info[0] for info in infos]
    table["height"] = [info[1] for info in infos]
    reasons = pd.Series([info[2] for info in infos], index=table.index)
    table["set"] = split(table, test_ids, seed, validation_fraction)
    bad = reasons.notna()
    unreadable = pd.DataFrame({"image_id": table.loc[bad, "image_id"], "set": table.loc[bad, "set"], "reason": reasons[bad]})
    return table.loc[~bad, METADATA_COLUMNS].reset_index(drop=True), unreadable.reset_index(drop=True), problems


def image_path(ava_dir, image_id: str, images_subdir: str = "images") -> Path:
    return Path(ava_dir) / images_subdir / f"{image_id}.jpg"


def read_metadata(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: metadata CSV not found; run notebook 00_data first")
    return pd.read_csv(path, dtype={"image_id": str})
