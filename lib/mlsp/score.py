"""Score new photos: a trained extractor + head, at full resolution, averaged over the 8 crops.

A scorer is a folder holding the head (`head.keras`) and `scorer.json` (backbone, weights, feature
kind). `mlsp score PATHS --model FOLDER` and `score_paths()` write a CSV of path and predicted MOS.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from mlsp import backbones
from mlsp.data import load_rgb
from mlsp.features import mlsp_model, traced, views

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def save_scorer(folder, head_path, backbone: str, weights: str, kind: str, trained_on: str) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    head = keras.models.load_model(head_path)
    head.save(folder / "head.keras")
    (folder / "scorer.json").write_text(json.dumps({"backbone": backbone, "weights": weights, "kind": kind, "input_mode": "original", "views": 8, "trained_on": trained_on}, indent=2))
    return folder


def collect(paths) -> list[Path]:
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


def score_paths(paths, model_dir, output=None, progress: bool = True, cache_dir=None) -> pd.DataFrame:
    """Predicted MOS per image; unreadable files get an empty score and their error, the rest are scored."""
    model_dir = Path(model_dir)
    config_path = model_dir / "scorer.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: not a scorer folder (the demo writes one to data/demo/scorer)")
    config = json.loads(config_path.read_text())
    head = keras.models.load_model(model_dir / "head.keras")
    backbone = backbones.load(config["backbone"], config["weights"], cache_dir=cache_dir)
    forward = traced(mlsp_model(backbone, kinds=(config["kind"],)))
    files = collect(paths)
    if progress and len(files) > 1:
        from tqdm import tqdm

        files_iter = tqdm(files, desc="scoring", unit="img")
    else:
        files_iter = files
    rows = []
    for path in files_iter:
        try:
            batch = backbone.preprocess(views(load_rgb(path), "original", augment=True))
        except Exception as error:
            rows.append({"path": str(path), "predicted_mos": np.nan, "error": f"{type(error).__name__}: {error}"})
            continue
        features = forward(batch)[config["kind"]]
        rows.append({"path": str(path), "predicted_mos": float(np.mean(head.predict_on_batch(features))), "error": ""})
    table = pd.DataFrame(rows, columns=["path", "predicted_mos", "error"])
    if output is not None:
        table.to_csv(output, index=False, float_format="%.4f")
    for row in rows:
        if row["error"]:
            print(f"skipped {row['path']}: {row['error']}")
    return table
