"""Run MLSP extraction over a list of images into feature stores: resumable, shardable, prefetched.

Decoding and cropping run in worker threads while the network runs (a small prefetch queue); the
network is one traced function for all input shapes; a progress bar shows images/s and time left.

One bad image never stops a run: an image that cannot be decoded, whose views are smaller than the
backbone accepts, or whose forward pass fails is marked failed in every store of the pass (with its
reason beside the store) and the run goes on. A resume skips failed images unless `retry_failed`.
"""
from __future__ import annotations

import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mlsp.backbones import min_input_side
from mlsp.errors import first_line
from mlsp.features import WIDE_SIZE, block_boundaries, mlsp_model, traced, views
from mlsp.images import ImageError, load_rgb
from mlsp.store import FAILED, PENDING, FeatureReader, FeatureWriter, StoreMismatch, mismatch, read_failures, store_path


def _load_views(path, mode: str, augment: bool, preprocess, min_side: int, backbone_name: str, apply_exif_orientation: bool):
    """(preprocessed views [V, h, w, 3], None) or (None, reason)."""
    try:
        image_views = views(load_rgb(path, apply_exif_orientation=apply_exif_orientation), mode, augment)
    except ImageError as error:
        return None, str(error)
    except Exception as error:  # anything else a strange file provokes: reported, skipped, the run goes on
        return None, f"{path}: {type(error).__name__}: {error}"
    height, width = image_views.shape[1:3]
    if min(height, width) < min_side:
        return None, f"{path}: too small for {backbone_name}: its {'crops are' if augment else 'input is'} {width}x{height}, the network needs {min_side} px on each side"
    return preprocess(image_views), None


def _stores(image_ids: list[str], backbone, mode: str, augment: bool, kinds, features_dir, shard_index: int, num_shards: int) -> dict:
    """kind -> (store path, this shard's image ids, views, feature shape) for one pass."""
    ids = [image_ids[i] for i in range(len(image_ids)) if i % num_shards == shard_index]
    channels = int(block_boundaries(backbone)[-1])  # a plain int: it is shown in messages and stored in shapes
    shapes = {"narrow": (channels,), "wide": (WIDE_SIZE, WIDE_SIZE, channels)}
    views = 8 if augment else 1
    return {kind: (store_path(features_dir, backbone.name, mode, kind, augment, shard_index, num_shards), ids, views, shapes[kind]) for kind in kinds}


def refuse_mismatched_stores(stores: list[tuple]) -> None:
    """Raise StoreMismatch naming every existing store (path, ids, views, shape) made for other images
    or another shape, before any is written: after notebook 00 reads other labels, all of them are."""
    problems = [problem for store in stores if (problem := mismatch(*store))]
    if problems:
        raise StoreMismatch(
            f"{len(problems)} of the {len(stores)} feature stores to write hold features of other images or another shape "
            f"(of an earlier metadata.csv: was notebook 00 rerun since?): " + "; ".join(problems)
            + ". Delete them, or give notebook 01 another work_dir (its features are kept in <work_dir>/features)"
        )


class NotEnoughDisk(OSError):
    """The disk holding the feature stores has less free space than the records still to write."""


def free_bytes(folder) -> int:
    """Free bytes on the file system holding `folder` (for an unprivileged user)."""
    return shutil.disk_usage(folder).free


# What a refusal tells the user to do, and that stopping lost nothing.
DISK_REMEDY = (
    "free space or give notebook 01 a work_dir on a larger disk. Nothing was written by this {what}; what earlier "
    "runs wrote is kept, and a rerun resumes it"
)


def check_free_space(writers: dict, count: int) -> None:
    """Raise NotEnoughDisk, naming the folder, the bytes needed and the bytes free, when writing
    `count` more records to every store in `writers` would not fit. The stores are created sparse
    (mlsp.store: no zero-fill), so without this check a disk too small for AVA (1.7 TB for IRv2's wide
    8-view store alone) would show only hours into extraction, as HDF5's bare "No space left on device".
    One pass's check, just before it extracts; check_free_space_for_passes checks a whole run first."""
    needed = count * sum(int(np.prod(writer.features.shape[1:])) * writer.features.dtype.itemsize for writer in writers.values())
    folder = next(iter(writers.values())).path.parent
    free = free_bytes(folder)
    if needed > free:
        raise NotEnoughDisk(
            f"{folder}: the {count} images still to extract need {needed / 1e9:.3g} GB in the {', '.join(writers)} store(s) "
            f"and the disk has {free / 1e9:.3g} GB free; " + DISK_REMEDY.format(what="pass")
        )


def record_bytes(views: int, feature_shape: tuple) -> int:
    """Bytes one image takes in a store: `views` float16 records of `feature_shape` (mlsp.store)."""
    return int(views) * int(np.prod(feature_shape)) * np.dtype(np.float16).itemsize


def images_to_write(stores: list[tuple], retry_failed: bool = False) -> int:
    """How many images one pass will still extract, as `extract` counts them: those pending in any of
    the pass's stores (path, image ids, views, shape; a store not made yet holds them all pending), and
    with `retry_failed` those failed earlier. Raises StoreMismatch as refuse_mismatched_stores."""
    refuse_mismatched_stores(stores)
    statuses = []
    for path, ids, _, _ in stores:
        if Path(path).exists():
            with FeatureReader(path) as reader:
                statuses.append(reader.status)
        else:
            statuses.append(np.full(len(ids), PENDING, dtype=np.uint8))
    status = np.stack(statuses)
    pending = (status == PENDING).any(axis=0)
    failed = (status == FAILED).any(axis=0) & ~pending
    return int(pending.sum() + (failed.sum() if retry_failed else 0))


def pass_needs(image_ids: list[str], backbones: list, features_dir, passes: dict, augmentation=(True, False), shard_index: int = 0, num_shards: int = 1, retry_failed: bool = False) -> list[dict]:
    """What every pass of a notebook-01 run still has to write: one dict per (backbone, input mode,
    augmentation) with backbone, mode, augment, images (still to extract) and bytes (in all the
    pass's stores; what `extract`'s own check will ask of the disk). Reads only the stores' status
    flags. Raises StoreMismatch naming every store made for other images, before any is read."""
    groups = [
        (backbone.name, mode, augment, list(_stores(image_ids, backbone, mode, augment, tuple(kinds), features_dir, shard_index, num_shards).values()))
        for backbone in backbones for mode, kinds in passes.items() for augment in augmentation
    ]
    refuse_mismatched_stores([store for *_, stores in groups for store in stores])
    needs = []
    for name, mode, augment, stores in groups:
        count = images_to_write(stores, retry_failed)
        needs.append({"backbone": name, "mode": mode, "augment": augment, "images": count, "bytes": count * sum(record_bytes(views, shape) for _, _, views, shape in stores)})
    return needs


def _existing_folder(folder) -> Path:
    """`folder`, or its nearest ancestor that exists: where the stores will be made, for the free-space question."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_free_space_for_passes(image_ids: list[str], backbones: list, features_dir, passes: dict, augmentation=(True, False), shard_index: int = 0, num_shards: int = 1, retry_failed: bool = False) -> int:
    """Before the first pass of a run writes anything: raise NotEnoughDisk, naming the features folder,
    the bytes all passes still need (and the largest pass), the bytes free and what to do, when the
    whole run would not fit; returns the bytes needed. All passes' stores go under `features_dir`
    (one disk), so their needs add up: checked pass by pass, a run learns that its last pass (IRv2's
    wide 8-view store, the largest) cannot fit only hours in. Each pass still checks again when it
    starts (check_free_space): the disk may fill meanwhile. Raises StoreMismatch as pass_needs."""
    needs = pass_needs(image_ids, backbones, features_dir, passes, augmentation, shard_index, num_shards, retry_failed)
    needed = sum(need["bytes"] for need in needs)
    folder = _existing_folder(features_dir)
    free = free_bytes(folder)
    if needed > free:
        largest = max(needs, key=lambda need: need["bytes"])
        raise NotEnoughDisk(
            f"{features_dir}: the {len(needs)} passes of this run still have to write {needed / 1e9:.3g} GB "
            f"({sum(need['images'] for need in needs)} image-passes; the largest, {largest['backbone']} {largest['mode']} "
            f"{'aug8' if largest['augment'] else 'whole'}, {largest['bytes'] / 1e9:.3g} GB) and the disk has {free / 1e9:.3g} GB free; "
            + DISK_REMEDY.format(what="run")
        )
    return needed


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
    retry_failed: bool = False,
    apply_exif_orientation: bool = False,
    batch_images: int = 1,
    sizes=None,
) -> dict:
    """Extract the requested kinds for one (input mode, augmentation) pass; returns a summary.

    Image i belongs to shard i % num_shards. Images already written are skipped, and so are images
    that failed in an earlier run unless `retry_failed`. The summary's `skipped` lists this run's
    failures ({image_id, path, reason}); `previously_failed` those of earlier runs not retried.
    batch_images: how many images' views go through the network in one batch (images of equal size
    only: every rescaled image, and full-resolution images that share a size). On a CPU 1 did better
    in the one run measured (Lite0, 12 small images, 2 loaded cores: batches of 8 gave 20-33% fewer
    images/s; benchmarks/measured/extraction.log); a GPU wants many. sizes: (width, height) per image, aligned with
    image_ids; given, the images are taken in order of size, so that equal sizes meet in a batch
    (AVA has many repeated sizes). The features do not depend on either.
    Raises StoreMismatch when a store exists for other images, StoreLocked when a store is held open,
    NotEnoughDisk when the records still to write do not fit on the disk (before any is extracted).
    """
    if batch_images < 1:
        raise ValueError(f"batch_images={batch_images} must be at least 1")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index={shard_index} must lie in [0, num_shards={num_shards})")
    mine = [i for i in range(len(image_ids)) if i % num_shards == shard_index]
    ids = [image_ids[i] for i in mine]
    paths = [image_paths[i] for i in mine]
    n_views = 8 if augment else 1
    stores = _stores(image_ids, backbone, mode, augment, kinds, features_dir, shard_index, num_shards)
    refuse_mismatched_stores(list(stores.values()))
    attrs = dict(
        backbone=backbone.name, weights=str(backbone.weights), input_mode=mode, views=n_views,
        block_boundaries=np.asarray(block_boundaries(backbone)), block_layers=np.asarray(backbone.block_layers, dtype="S"),
        shard_index=shard_index, num_shards=num_shards,
    )
    writers = {kind: FeatureWriter(path, ids, n_views, shape, dict(attrs, kind=kind)) for kind, (path, _, _, shape) in stores.items()}
    try:
        status = np.stack([writer.status() for writer in writers.values()])
        pending = (status == PENDING).any(axis=0)
        failed = (status == FAILED).any(axis=0) & ~pending
        todo = [i for i in range(len(ids)) if pending[i] or (retry_failed and failed[i])]
        if sizes is not None and mode == "original" and batch_images > 1:
            mine_sizes = [tuple(sizes[i]) for i in mine]
            todo.sort(key=lambda index: mine_sizes[index])  # a stable sort: equal sizes keep their order
        check_free_space(writers, len(todo))
        previously_failed = []
        if failed.any() and not retry_failed:
            reasons = read_failures(next(iter(writers.values())).path)
            previously_failed = [{"image_id": ids[i], "path": str(paths[i]), "reason": reasons.get(ids[i], "failed in an earlier run")} for i in np.flatnonzero(failed)]
        forward = extractor or traced(mlsp_model(backbone, kinds))
        min_side = min_input_side(backbone.name)
        load = lambda index: _load_views(paths[index], mode, augment, backbone.preprocess, min_side, backbone.name, apply_exif_orientation)  # noqa: E731
        skipped, started = [], time.perf_counter()
        bar = None
        if progress:
            from mlsp.quiet import progress_bar

            bar = progress_bar(total=len(todo), desc=f"{backbone.name} {mode} {'aug8' if augment else 'whole'}", unit="img")
        def fail(index: int, reason: str) -> None:
            skipped.append({"image_id": ids[index], "path": str(paths[index]), "reason": reason})
            for writer in writers.values():
                writer.mark_failed(index, reason)

        def run(group: list) -> None:
            """Views of one or more images of equal size through the network in one batch; when a
            batch of several fails, each image is tried alone, so only a bad image is lost."""
            try:
                outputs = {kind: np.asarray(value) for kind, value in forward(np.concatenate([views for _, views in group])).items()}
            except Exception as error:  # e.g. out of memory on one huge image
                if len(group) > 1:
                    for item in group:
                        run([item])
                    return
                index = group[0][0]
                fail(index, f"{paths[index]}: forward pass failed: {first_line(error)}")
                return
            for position, (index, _) in enumerate(group):
                for kind, writer in writers.items():
                    writer.write(index, outputs[kind][position * n_views : (position + 1) * n_views])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            in_flight, group = deque(), []
            queue = iter(todo)
            for index in queue:
                in_flight.append((index, pool.submit(load, index)))
                if len(in_flight) >= max(prefetch, 2 * batch_images):
                    break
            while in_flight:
                index, future = in_flight.popleft()
                following = next(queue, None)
                if following is not None:
                    in_flight.append((following, pool.submit(load, following)))
                views, error = future.result()
                if error is not None:
                    fail(index, error)
                else:
                    if group and (group[0][1].shape != views.shape or len(group) == batch_images):
                        run(group)
                        group = []
                    group.append((index, views))
                if bar is not None:
                    bar.update(1)
            if group:
                run(group)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
        extracted = len(todo) - len(skipped)
        return {
            "backbone": backbone.name, "mode": mode, "augment": augment, "images": len(ids), "already_done": len(ids) - len(todo) - len(previously_failed),
            "extracted": extracted, "skipped": skipped, "previously_failed": previously_failed, "seconds": seconds,
            "seconds_per_image": seconds / extracted if extracted else None,
            "files": {kind: str(writer.path) for kind, writer in writers.items()},
            "bytes": {kind: Path(writer.path).stat().st_size for kind, writer in writers.items()},
        }
    finally:
        for writer in writers.values():
            writer.close()


def run_extraction(metadata, ava_dir, backbone, features_dir, passes: dict, augmentation=(True, False), shard_index: int = 0, num_shards: int = 1, workers: int = 2, progress: bool = True, retry_failed: bool = False, apply_exif_orientation: bool = False, batch_images: int = 1) -> list[dict]:
    """Every pass for one backbone: `passes` maps an input mode to its feature kinds. Images are found
    by the metadata's path column (any data set), or for metadata without one by AVA's layout in ava_dir.
    Raises StoreMismatch (any store of the passes made for other images) and NotEnoughDisk (all the
    passes would not fit: check_free_space_for_passes) before the first pass writes anything."""
    from mlsp.data import image_paths

    ids = list(metadata["image_id"])
    paths = image_paths(metadata, ava_dir)
    check_free_space_for_passes(ids, [backbone], features_dir, passes, augmentation, shard_index, num_shards, retry_failed)
    summaries = []
    for mode, kinds in passes.items():
        model = mlsp_model(backbone, tuple(kinds))
        forward = traced(model)  # one trace serves both augmentation settings of this mode
        for augment in augmentation:
            summaries.append(
                extract(
                    ids, paths, backbone, mode, augment, tuple(kinds), features_dir, shard_index, num_shards, workers,
                    progress=progress, extractor=forward, retry_failed=retry_failed, apply_exif_orientation=apply_exif_orientation,
                    batch_images=batch_images, sizes=list(zip(metadata["width"], metadata["height"])),
                )
            )
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


def skipped_table(summaries: list[dict]):
    """One line per (image, pass) without features: failed in this run, or in an earlier one and not retried."""
    import pandas as pd

    lines = [
        dict(item, backbone=s["backbone"], input=s["mode"], views=8 if s["augment"] else 1, when=when)
        for s in summaries
        for when, items in (("this run", s["skipped"]), ("earlier run", s.get("previously_failed", [])))
        for item in items
    ]
    return pd.DataFrame(lines, columns=["image_id", "path", "reason", "backbone", "input", "views", "when"])


def figure_example(metadata, skipped):
    """The metadata row (a one-row DataFrame) of the image notebook 01 draws Fig. 2 from: the first test
    image that no pass skipped (else the first such image of any set), or None when every image was
    skipped. An image extraction refused (too large to decode, unreadable) would fail there too, after
    all the extraction is done. skipped: skipped_table's output (its image_id column)."""
    usable = metadata[~metadata["image_id"].astype(str).isin(set(skipped["image_id"].astype(str)))]
    test = usable[usable["set"] == "test"]
    chosen = test if len(test) else usable
    return chosen.head(1) if len(chosen) else None


def summary_table(summaries: list[dict]):
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "backbone": s.get("backbone", ""), "input": s["mode"], "views": 8 if s["augment"] else 1, "images": s["images"],
                "already done": s["already_done"], "extracted": s["extracted"], "skipped": len(s["skipped"]),
                "failed earlier": len(s.get("previously_failed", [])),
                "s / image": s["seconds_per_image"], "MB on disk": sum(s["bytes"].values()) / 1e6,
            }
            for s in summaries
        ]
    )
