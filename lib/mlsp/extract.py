"""Run MLSP extraction over a list of images into feature stores: resumable, shardable, prefetched.

Decoding and cropping run in worker threads while the network runs (a small prefetch queue); the
network is one traced function for all input shapes; a progress bar shows images/s and time left.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mlsp.data import load_rgb
from mlsp.features import WIDE_SIZE, block_boundaries, mlsp_model, traced, views
from mlsp.store import FeatureWriter, store_path


def _load_views(path, mode: str, augment: bool, preprocess):
    try:
        return preprocess(views(load_rgb(path), mode, augment)), None
    except Exception as error:  # a broken file is reported and skipped, the run goes on
        return None, f"{type(error).__name__}: {error}"


def extract(
    image_ids: list[str],
    image_paths: list,
    backbone,
    mode: str,
    augment: bool,
    kinds=("narrow", "wide"),
    features_dir="features",
    shard_index: int = 0,
    num_shards: int = 1,
    workers: int = 2,
    prefetch: int = 4,
    progress: bool = True,
    extractor=None,
) -> dict:
    """Extract the requested kinds for one (input mode, augmentation) pass; returns a summary.

    Image i belongs to shard i % num_shards. Images already marked done are skipped.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} must lie in [0, num_shards={num_shards})")
    mine = [i for i in range(len(image_ids)) if i % num_shards == shard_index]
    ids = [image_ids[i] for i in mine]
    paths = [image_paths[i] for i in mine]
    n_views = 8 if augment else 1
    channels = block_boundaries(backbone)[-1]
    shapes = {"narrow": (channels,), "wide": (WIDE_SIZE, WIDE_SIZE, channels)}
    attrs = dict(
        backbone=backbone.name, weights=str(backbone.weights), input_mode=mode, views=n_views,
        block_boundaries=np.asarray(block_boundaries(backbone)), block_layers=np.asarray(backbone.block_layers, dtype="S"),
        shard_index=shard_index, num_shards=num_shards,
    )
    writers = {
        kind: FeatureWriter(store_path(features_dir, backbone.name, mode, kind, augment, shard_index, num_shards), ids, n_views, shapes[kind], dict(attrs, kind=kind))
        for kind in kinds
    }
    try:
        done = np.logical_and.reduce([writer.done() for writer in writers.values()])
        todo = [i for i in range(len(ids)) if not done[i]]
        forward = extractor or traced(mlsp_model(backbone, kinds))
        skipped, started = [], time.perf_counter()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"{backbone.name} {mode} {'aug8' if augment else 'whole'}", unit="img")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = deque()
            queue = iter(todo)
            for index in queue:
                pending.append((index, pool.submit(_load_views, paths[index], mode, augment, backbone.preprocess)))
                if len(pending) >= prefetch:
                    break
            while pending:
                index, future = pending.popleft()
                following = next(queue, None)
                if following is not None:
                    pending.append((following, pool.submit(_load_views, paths[following], mode, augment, backbone.preprocess)))
                batch, error = future.result()
                if error is None:
                    outputs = forward(batch)
                    for kind, writer in writers.items():
                        writer.write(index, outputs[kind].numpy())
                else:
                    skipped.append({"image_id": ids[index], "path": str(paths[index]), "reason": error})
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
        extracted = len(todo) - len(skipped)
        return {
            "backbone": backbone.name, "mode": mode, "augment": augment, "images": len(ids), "already_done": len(ids) - len(todo),
            "extracted": extracted, "skipped": skipped, "seconds": seconds,
            "seconds_per_image": seconds / extracted if extracted else None,
            "files": {kind: str(writer.path) for kind, writer in writers.items()},
            "bytes": {kind: Path(writer.path).stat().st_size for kind, writer in writers.items()},
        }
    finally:
        for writer in writers.values():
            writer.close()


def run_extraction(metadata, ava_dir, backbone, features_dir, passes: dict, augmentation=(True, False), shard_index: int = 0, num_shards: int = 1, workers: int = 2, progress: bool = True) -> list[dict]:
    """Every pass for one backbone: `passes` maps an input mode to its feature kinds."""
    from mlsp.data import image_path

    ids = list(metadata["image_id"])
    paths = [image_path(ava_dir, image_id) for image_id in ids]
    summaries = []
    for mode, kinds in passes.items():
        model = mlsp_model(backbone, tuple(kinds))
        forward = traced(model)  # one trace serves both augmentation settings of this mode
        for augment in augmentation:
            summaries.append(extract(ids, paths, backbone, mode, augment, tuple(kinds), features_dir, shard_index, num_shards, workers, progress=progress, extractor=forward))
    return summaries


def merge_all(metadata, backbone_name: str, features_dir, passes: dict, augmentation, num_shards: int) -> list[dict]:
    """Combine the shard files of every pass into one store per pass."""
    from mlsp.store import merge_shards

    merged = []
    for mode, kinds in passes.items():
        for kind in kinds:
            for augment in augmentation:
                shards = [store_path(features_dir, backbone_name, mode, kind, augment, index, num_shards) for index in range(num_shards)]
                absent = [str(path) for path in shards if not path.exists()]
                if absent:
                    raise FileNotFoundError(f"cannot merge: shard files missing: {', '.join(absent)}")
                output, missing = merge_shards(shards, store_path(features_dir, backbone_name, mode, kind, augment), list(metadata["image_id"]))
                merged.append({"file": str(output), "missing_images": missing})
    return merged


def summary_table(summaries: list[dict]):
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "backbone": s.get("backbone", ""), "input": s["mode"], "views": 8 if s["augment"] else 1, "images": s["images"],
                "already done": s["already_done"], "extracted": s["extracted"], "skipped": len(s["skipped"]),
                "s / image": s["seconds_per_image"], "MB on disk": sum(s["bytes"].values()) / 1e6,
            }
            for s in summaries
        ]
    )
