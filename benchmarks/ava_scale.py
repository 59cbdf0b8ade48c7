"""AVA at the paper profile's scale: every stage measured on this machine at a reduced size and
projected to AVA's 255,530 rows (20,000 of them test images).

    python benchmarks/ava_scale.py [--rows 2000] [--large [--large-gb N]] [--out DIR] [--quick]
                                   [--gpu-tflops 156 --gpu-utilization 0.3] [--profile-flops]

The default run takes about 1.5 CPU-minutes and a few GB of scratch disk (2-4 minutes on two cores
shared with other work). The paper profile's settings (backbones, passes, augmentation, batch sizes,
verify_images, ...) come from params/paper/ through mlsp.parameters; channel counts from the networks.
1. metadata: an AVA.txt of 255,530 synthetic rows parsed as notebook 00 parses it (timed at full
   size); --rows AVA-shaped JPEGs (mlsp.embedded, copied under their ids) read by mlsp.data.read_ava,
   header reads only and with verification; timed, projected linearly to 255,530.
2. feature stores: every store of the profile made by mlsp.store.FeatureWriter for --rows images;
   seconds, logical bytes and bytes on disk at creation, bytes on disk per record written; projected.
3. writes and reads: the original-resolution 8-view store of each backbone and kind filled one image
   at a time as extraction writes (fsync included), then read as training reads
   (mlsp.train.FeatureBatches: batches of 128 random images, one random view each); projected to an
   epoch over AVA's trainable images. These stores fit the page cache; AVA's do not: --large also
   fills and reads the largest store of each kind at 1.25 x RAM (tens of GB, several minutes).
4. compute: FLOPs of each forward pass counted from the Keras models (Conv2D and Dense layers; the tf
   profiler agrees within 1%: --profile-flops); this CPU's rate from one extraction forward per
   backbone and one training step per head; extraction's and fine-tuning's image feeds (one thread).
   Projected: hours per pass and per epoch here, and on one GPU at an assumed throughput.
5. peak resident memory of every stage (VmHWM, reset at the start of each stage; what earlier stages
   left in the process is included, so it errs high for a process that runs only that stage).

Each figure is one line: `measured <stage>: <value> <unit>` (timed, counted or sized in this run)
or `projected <stage>: <value> <unit>` (computed from measured figures by the scaling the `#` line
before it states). Every other line starts with `#`, assumptions included.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AVA_ROWS = 255_530  # rows of AVA.txt
AVA_TEST = 20_000  # ids in generic_test.jpgl
# Training also reads one random view of each validation image per epoch (mlsp.train.fit), so an
# epoch reads every trainable image: AVA's rows less the test list.
AVA_TRAINABLE = AVA_ROWS - AVA_TEST
# A --large read store is this many times the RAM, so that the page cache cannot hold it.
LARGE_FACTOR = 1.25
LARGE_SLICE = 64e6  # bytes per write while filling a --large store: disk-bound, not call-bound
# Assumed GPU: NVIDIA A100 SXM, dense TF32 tensor-core peak (NVIDIA's A100 datasheet; TensorFlow
# runs float32 convolutions in TF32 on it by default), times a guess at the share of that peak such
# convolution networks reach in TensorFlow. Both are inputs, not measurements (--gpu-tflops,
# --gpu-utilization); no GPU was at hand to measure them.
GPU_NAME = "NVIDIA A100 SXM, dense TF32"
GPU_PEAK_TFLOPS = 156.0
GPU_UTILIZATION = 0.3
# Training a network costs about 3x its forward pass (the backward pass computes two products per
# forward one: gradients of inputs and of weights), the usual convention for FLOP budgets.
TRAIN_FLOPS_PER_FORWARD = 3
FEED_IMAGES = 8  # images per extraction feed measurement (one thread, a few seconds)


class Report:
    """Prints each figure as it is made and keeps it: figures[(kind, stage)] = (value, unit)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.figures: dict[tuple[str, str], tuple[float, str]] = {}

    def note(self, text: str) -> None:
        print(f"# {text}", file=self.stream, flush=True)

    def measured(self, stage: str, value: float, unit: str) -> float:
        return self._figure("measured", stage, value, unit)

    def projected(self, stage: str, value: float, unit: str) -> float:
        return self._figure("projected", stage, value, unit)

    def _figure(self, kind: str, stage: str, value: float, unit: str) -> float:
        if ":" in stage or " " in unit or not math.isfinite(value):
            raise ValueError(f"figure {kind} {stage!r} = {value!r} {unit!r}: no ':' in a stage, one word for a unit, a finite value")
        self.figures[kind, stage] = (float(value), unit)
        print(f"{kind} {stage}: {number(value)} {unit}", file=self.stream, flush=True)
        return float(value)


def number(value: float) -> str:
    """Three significant digits, never in exponent form (read by people and by a regex)."""
    if value == 0:
        return "0"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


# ---------------------------------------------------------------------------------------- memory

def reset_peak_rss() -> bool:
    """Reset the process's peak resident set (Linux >= 4.0, /proc/self/clear_refs); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_bytes() -> int:
    """The process's resident memory now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmRSS")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kB


@contextmanager
def stage_memory(report: Report, stage: str):
    """Report the process's peak resident memory during the block. Libraries, networks and heap that
    earlier stages left are included, so for a process that runs only this stage it errs high."""
    reset = reset_peak_rss()
    yield
    report.measured(f"{stage} peak RSS", peak_rss_bytes() / 1e6, "MB")
    if not reset:
        report.note(f"(peak RSS of {stage}: the process's peak so far, it could not be reset here)")


def ram_bytes() -> int:
    """MemTotal from /proc/meminfo (bytes): what the page cache can at most hold."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is empty on Linux)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def io_counters() -> dict[str, int]:
    """rchar / read_bytes (from the disk) / write_bytes of this process, from /proc/self/io."""
    with open("/proc/self/io") as handle:
        return {key: int(value) for key, value in (line.split(": ") for line in handle)}


def evict_from_page_cache(path) -> bool:
    """Drop the file's pages from the page cache (written back first, since dirty pages stay), as an
    AVA store is when an epoch starts: at 1.25 x RAM most of it was pushed out long before, but a store
    read straight after it was written would find its last written gigabytes still cached (measured:
    34-65 % of the reads came from the disk without this). posix_fadvise needs no privileges, unlike
    dropping every cache. Returns False where the system has no posix_fadvise (nothing dropped)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)
    return True


def on_disk(path) -> int:
    """Bytes the file occupies on the disk (st_blocks), as opposed to its logical size (st_size)."""
    return os.stat(path).st_blocks * 512


def fsync(path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


# ------------------------------------------------------------------------------- paper profile

def paper_profile() -> dict:
    """The paper profile's settings that set the scale: each notebook's defaults, then params/paper."""
    from mlsp import parameters

    notebooks = parameters.list_notebooks()
    resolved = parameters.resolve_profile("paper", notebooks)
    merged = {nb.stem: {**parameters.declared_parameters(nb.path), **resolved[nb.stem]} for nb in notebooks}
    data, extraction = merged["00_data"], merged["01_extract_features"]
    table2, table3 = merged["02_table2_rescaled"], merged["03_table3_full_resolution"]
    return {
        "backbones": list(extraction["backbones"]), "passes": dict(extraction["passes"]), "augmentation": list(extraction["augmentation"]),
        "batch_images": int(extraction["batch_images"]), "workers": int(extraction["workers"]),
        "verify_images": bool(data["verify_images"]), "validation_fraction": float(data["validation_fraction"]),
        "head_batch": int(table3["batch_size"]), "max_epochs": int(table3["max_epochs"]),
        "finetune": bool(table2["finetune"]), "finetune_backbone": table2["backbone"], "finetune_batch": int(table2["finetune_batch_size"]),
        "finetune_max_epochs": int(table2["finetune_max_epochs"]),
    }


# ------------------------------------------------------------------------------------ 1 metadata

def write_ava_txt(folder: Path, n_rows: int, n_test: int, seed: int) -> list[str]:
    """folder/AVA.txt with n_rows synthetic rows in AVA's 15-field format (ids 100001...; about 200
    votes each, at least one) and folder/generic_test.jpgl listing n_test of them. Returns the ids."""
    rng = np.random.default_rng(seed)
    index = np.arange(1, n_rows + 1)
    votes = rng.poisson(20, size=(n_rows, 10))
    votes[:, 4] += 1  # a row without votes is rejected by the reader
    table = np.column_stack([index, 100000 + index, votes, rng.integers(0, 67, size=(n_rows, 2)), rng.integers(1, 1400, n_rows)])
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "AVA.txt", table, fmt="%d", delimiter=" ")
    ids = [str(value) for value in 100000 + index]
    test = sorted(rng.choice(len(ids), size=n_test, replace=False))
    (folder / "generic_test.jpgl").write_text("".join(f"{ids[i]}\n" for i in test))
    return ids


def write_images(folder: Path, ids: list[str], pool: list[Path]) -> None:
    """images/<id>.jpg for every id: the pool's files in turn, each a file of its own."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    contents = [path.read_bytes() for path in pool]
    for position, image_id in enumerate(ids):
        (images / f"{image_id}.jpg").write_bytes(contents[position % len(contents)])


def make_pool(folder: Path, n_images: int, seed: int) -> list[Path]:
    """AVA-shaped JPEGs (sizes and file oddities of mlsp.embedded's shape='ava')."""
    from mlsp import embedded

    embedded.generate(folder, n_images, seed=seed, shape="ava", problem_cases=False)
    return sorted((folder / "images").glob("*.jpg"))


def metadata_stage(work: Path, rows: int, pool: list[Path], profile: dict, report: Report, seed: int = 0, full_rows: int = AVA_ROWS) -> dict:
    """Stage 1: an AVA.txt of `full_rows` rows (AVA's count) parsed and split as notebook 00 does; `rows`
    rows with image files (the pool's JPEGs in turn) read by mlsp.data.read_ava with header reads only
    and with verification, projected x AVA_ROWS / rows. `profile` needs validation_fraction and
    verify_images. Returns seconds: parse (full_rows), headers and verified (rows), and rows."""
    from mlsp import data

    report.note("== 1 metadata (notebook 00): parsing at AVA's full size; image reads on --rows files just written (page cache warm), x 255,530 / rows")
    full = work / "ava_full"
    write_ava_txt(full, full_rows, round(full_rows * AVA_TEST / AVA_ROWS), seed)
    with stage_memory(report, "metadata parse"):
        start = time.perf_counter()
        table, problems = data.parse_ava_txt(full / "AVA.txt")
        test_ids, _ = data.read_test_list(full / "generic_test.jpgl")
        data.split(table, set(test_ids), seed, profile["validation_fraction"])
        parse_seconds = time.perf_counter() - start
    if len(table) != full_rows or problems:
        raise RuntimeError(f"the synthetic AVA.txt read back as {len(table)} rows and {len(problems)} problems")
    report.measured(f"metadata parse of {full_rows} rows", parse_seconds, "s")
    shutil.rmtree(full)

    ava = work / "ava"
    ids = write_ava_txt(ava, rows, max(1, round(rows * AVA_TEST / AVA_ROWS)), seed)
    write_images(ava, ids, pool)
    report.measured("metadata mean JPEG file", np.mean([path.stat().st_size for path in pool]) / 1e3, "kB")
    seconds = {}
    for verify, label in ((False, "metadata header reads"), (True, "metadata header reads and verification")):
        with stage_memory(report, label):
            start = time.perf_counter()
            metadata, unreadable, _ = data.read_ava(ava, seed, verify_images=verify, progress=False, validation_fraction=profile["validation_fraction"])
            seconds[verify] = time.perf_counter() - start
        if len(metadata) + len(unreadable) != rows:
            raise RuntimeError(f"read_ava saw {len(metadata) + len(unreadable)} of {rows} rows")
        report.measured(f"{label} rate", rows / seconds[verify], "images/s")
        report.projected(f"{label} for AVA", seconds[verify] * AVA_ROWS / rows / 60, "min")
    report.projected(f"metadata stage for AVA (verify_images {str(profile['verify_images']).lower()})", seconds[profile["verify_images"]] * AVA_ROWS / rows / 60, "min")
    return {"parse": parse_seconds, "headers": seconds[False], "verified": seconds[True], "rows": rows}


# ---------------------------------------------------------------------------------- 2 stores

@dataclass(frozen=True)
class StoreSpec:
    """One feature store of the profile; views x feature_shape float16 per image."""

    backbone: str
    mode: str
    kind: str
    augment: bool
    views: int
    feature_shape: tuple

    @property
    def name(self) -> str:
        from mlsp.store import store_path

        return f"{self.backbone}/{store_path('', self.backbone, self.mode, self.kind, self.augment).stem}"


def feature_shape(kind: str, channels: int) -> tuple:
    """A record's shape per view, as mlsp.extract stores it: narrow (C,), wide (5, 5, C)."""
    from mlsp.features import WIDE_SIZE

    return (channels,) if kind == "narrow" else (WIDE_SIZE, WIDE_SIZE, channels)


def paper_stores(profile: dict, channels: dict[str, int]) -> list[StoreSpec]:
    """Every store the profile's extraction makes: backbones x passes (mode -> kinds) x augmentation."""
    return [
        StoreSpec(backbone, mode, kind, augment, 8 if augment else 1, feature_shape(kind, channels[backbone]))
        for backbone in profile["backbones"]
        for mode, kinds in profile["passes"].items()
        for kind in kinds
        for augment in profile["augmentation"]
    ]


def store_stage(specs: list[StoreSpec], work: Path, rows: int, report: Report, written_rows: int = 16) -> dict[str, dict]:
    """Stage 2: each store created for `rows` images, a few records written; projected to AVA's rows.

    Returns name -> {record_bytes (per image, from the dataset's real shape and dtype), seconds,
    logical, disk (bytes at creation), disk_per_record (bytes on disk per image written), and the
    projections: seconds_ava, features_ava (= AVA_ROWS x record_bytes), logical_ava, disk_ava, full_ava}.
    """
    from mlsp.store import FeatureReader, FeatureWriter, store_path

    report.note(f"== 2 feature stores (notebook 01), created for {rows} images and projected x {AVA_ROWS} / {rows}; "
                "features when full = 255,530 x the record's bytes; the rest (chunk index, ids, flags) scales with the rows")
    ids = [str(index) for index in range(rows)]
    rng = np.random.default_rng(0)
    results = {}
    with stage_memory(report, "stores"):
        for spec in specs:
            path = store_path(work / "features", spec.backbone, spec.mode, spec.kind, spec.augment)
            start = time.perf_counter()
            writer = FeatureWriter(path, ids, spec.views, spec.feature_shape, {"backbone": spec.backbone, "input_mode": spec.mode, "kind": spec.kind})
            seconds = time.perf_counter() - start
            logical, disk = os.stat(path).st_size, on_disk(path)
            with writer:
                record = rng.standard_normal((spec.views, *spec.feature_shape)).astype(np.float16)
                for index in range(min(written_rows, rows)):
                    writer.write(index, record)
            disk_per_record = (on_disk(path) - disk) / min(written_rows, rows)
            with FeatureReader(path) as reader:
                record_bytes = int(np.prod(reader.shape[1:])) * reader.features.dtype.itemsize
            path.unlink()
            scale = AVA_ROWS / rows
            result = {
                "record_bytes": record_bytes, "seconds": seconds, "logical": logical, "disk": disk, "disk_per_record": disk_per_record,
                "seconds_ava": seconds * scale, "features_ava": AVA_ROWS * record_bytes,
                "logical_ava": AVA_ROWS * record_bytes + (logical - rows * record_bytes) * scale, "disk_ava": disk * scale,
            }
            result["full_ava"] = result["disk_ava"] + AVA_ROWS * disk_per_record
            results[spec.name] = result
            report.measured(f"store {spec.name} record", record_bytes / 1e3, "kB")
            report.measured(f"store {spec.name} create", seconds, "s")
            report.measured(f"store {spec.name} disk at creation", disk / 1e6, "MB")
            report.measured(f"store {spec.name} disk per record written", disk_per_record / 1e3, "kB")
            report.projected(f"store {spec.name} create for AVA", result["seconds_ava"], "s")
            report.projected(f"store {spec.name} logical size for AVA", result["logical_ava"] / 1e9, "GB")
            report.projected(f"store {spec.name} disk at creation for AVA", result["disk_ava"] / 1e9, "GB")
            report.projected(f"store {spec.name} disk when full for AVA", result["full_ava"] / 1e9, "GB")
    for key, label, unit, scale in (("seconds_ava", "create", "s", 1), ("logical_ava", "logical size", "TB", 1e12), ("disk_ava", "disk at creation", "GB", 1e9), ("full_ava", "disk when full", "TB", 1e12)):
        report.projected(f"stores all {label} for AVA", sum(result[key] for result in results.values()) / scale, unit)
    return results


# ---------------------------------------------------------------------------- 3 writes and reads

def fill_store(path: Path, spec: StoreSpec, rows: int, slice_bytes: float = 0, seed: int = 0) -> float:
    """Write `rows` images through FeatureWriter, then fsync: seconds. With slice_bytes 0, one image per
    call, as extraction writes; else slices of about that many bytes (flags set after), which only
    fills a large store faster."""
    from mlsp.store import WRITTEN, FeatureWriter

    per_write = max(1, int(slice_bytes // record_bytes(spec))) if slice_bytes else 1
    records = np.random.default_rng(seed).standard_normal((2, spec.views, *spec.feature_shape), dtype=np.float32).astype(np.float16)
    blocks = [np.repeat(record[None], per_write, axis=0) for record in records]
    start = time.perf_counter()
    with FeatureWriter(path, [str(index) for index in range(rows)], spec.views, spec.feature_shape) as writer:
        for first in range(0, rows, per_write):
            block = blocks[(first // per_write) % 2][: rows - first]
            if per_write == 1:
                writer.write(first, block[0])
            else:
                writer.features[first : first + len(block)] = block
                writer.done_flags[first : first + len(block)] = WRITTEN
    fsync(path)
    return time.perf_counter() - start


def training_reads(path: Path, batch_size: int, epochs: int, max_batches: int | None = None) -> dict:
    """Read a store as mlsp.train.fit does (FeatureBatches: random order, one random view per image,
    full batches of float32): images read, seconds, bytes read from the disk (/proc/self/io)."""
    from mlsp.store import FeatureReader
    from mlsp.train import FeatureBatches

    with FeatureReader(path) as reader:
        rows = np.arange(reader.shape[0])
        batches = FeatureBatches(reader, rows, np.zeros(len(rows), np.float32), batch_size=batch_size, random_view=True, seed=0, fill_last=True)
        count = len(batches) if max_batches is None else min(max_batches, len(batches))
        images, before, start = 0, io_counters(), time.perf_counter()
        for _ in range(epochs):
            for index in range(count):
                images += len(batches[index][0])
            batches.on_epoch_end()
        seconds = time.perf_counter() - start
        disk = io_counters()["read_bytes"] - before["read_bytes"]
    return {"images": images, "seconds": seconds, "disk_bytes": disk}


def record_bytes(spec: StoreSpec) -> int:
    """Bytes of one image's record: views x the feature shape, float16."""
    return spec.views * int(np.prod(spec.feature_shape)) * 2


def measure_store(spec: StoreSpec, path: Path, rows: int, batch_size: int, epochs: int, max_batches: int | None = None, slice_bytes: float = 0,
                  cold: bool = False) -> dict:
    """Fill a store of `rows` images, read it as training does, delete it: rates and the share from disk.
    cold: evict the store from the page cache before reading (evict_from_page_cache)."""
    view_bytes = record_bytes(spec) // spec.views
    seconds = fill_store(path, spec, rows, slice_bytes)
    if cold:
        evict_from_page_cache(path)
    reads = training_reads(path, batch_size, epochs, max_batches)
    path.unlink()
    return {
        "rows": rows, "view_bytes": view_bytes, "write_images_per_s": rows / seconds, "write_mbps": rows * record_bytes(spec) / seconds / 1e6,
        "read_images_per_s": reads["images"] / reads["seconds"], "read_mbps": reads["images"] * view_bytes / reads["seconds"] / 1e6,
        "disk_share": reads["disk_bytes"] / (reads["images"] * view_bytes),
    }


def read_write_stage(specs: list[StoreSpec], work: Path, rows: int, report: Report, batch_size: int, epochs: int = 3,
                     budget_bytes: float = 0.1e9, large: bool = False, large_batches: int = 20, large_bytes: float | None = None) -> dict[tuple, dict]:
    """Stage 3: for each backbone and kind, its original-resolution 8-view store (else its first store),
    of min(rows, budget_bytes) but at least one batch, filled and read `epochs` times.

    Returns (backbone, kind) -> {rows, view_bytes, write_images_per_s, write_mbps, read_images_per_s,
    read_mbps, disk_share, and "large": the same for a store LARGE_FACTOR x RAM when `large`}; with
    `large` the largest store of each kind is filled in slices (disk-bound) and `large_batches` read;
    `large_bytes` replaces LARGE_FACTOR x RAM (a smaller one only checks that the path runs).
    """
    report.note(f"== 3 writes and reads: one image per write + fsync, as extraction writes; reads as training reads "
                f"(batches of {batch_size} random images x one random view); stores of min(rows, {budget_bytes / 1e9:g} GB), at least one batch, "
                f"just written (page cache warm); epoch = the {AVA_TRAINABLE} trainable images (train + validation), x 1 / measured images/s")
    chosen = {}
    for spec in specs:
        key = (spec.backbone, spec.kind)
        if key not in chosen or (spec.mode, spec.augment) == ("original", True):
            chosen[key] = spec
    results = {}
    with stage_memory(report, "writes and reads"):
        for key, spec in chosen.items():
            n = int(max(batch_size, min(rows, budget_bytes // record_bytes(spec))))
            result = results[key] = measure_store(spec, work / "reads" / f"{spec.name}.h5", n, batch_size, epochs)
            report.measured(f"write {spec.name} ({n} images)", result["write_images_per_s"], "images/s")
            report.measured(f"write {spec.name} bytes", result["write_mbps"], "MB/s")
            report.measured(f"read {spec.name} ({n} images)", result["read_images_per_s"], "images/s")
            report.measured(f"read {spec.name} bytes", result["read_mbps"], "MB/s")
            report.measured(f"read {spec.name} share from disk", 100 * result["disk_share"], "%")
            report.projected(f"epoch reads {spec.name} for AVA", AVA_TRAINABLE / result["read_images_per_s"] / 60, "min")
    if not large:
        return results
    for kind in sorted({spec.kind for spec in chosen.values()}):
        spec = max((item for item in chosen.values() if item.kind == kind), key=record_bytes)
        n = max(batch_size, math.ceil((large_bytes or LARGE_FACTOR * ram_bytes()) / record_bytes(spec)))
        report.note(f"--large: {spec.name} with {n} images ({n * record_bytes(spec) / 1e9:.1f} GB, {n * record_bytes(spec) / ram_bytes():.2f} x RAM) "
                    f"written in slices of {LARGE_SLICE / 1e6:g} MB, evicted from the page cache, {large_batches} batches read")
        with stage_memory(report, f"large {kind} store"):
            result = measure_store(spec, work / "reads" / "large.h5", n, batch_size, 1, large_batches, slice_bytes=LARGE_SLICE, cold=True)
        results[(spec.backbone, kind)]["large"] = result
        report.measured(f"write {spec.name} large in slices bytes", result["write_mbps"], "MB/s")
        report.measured(f"read {spec.name} large", result["read_images_per_s"], "images/s")
        report.measured(f"read {spec.name} large bytes", result["read_mbps"], "MB/s")
        report.measured(f"read {spec.name} large share from disk", 100 * result["disk_share"], "%")
        report.projected(f"epoch reads {spec.name} large for AVA", AVA_TRAINABLE / result["read_images_per_s"] / 60, "min")
    return results


# ------------------------------------------------------------------------------------ 4 compute

_FLOP_PROBES: dict[int, tuple] = {}  # id(model) -> (model, its Conv2D and Dense layers, a model with their outputs)


def count_flops(model, input_shape: tuple) -> int:
    """FLOPs (2 per multiply-add) of one forward pass of `model` on one input of `input_shape`
    (without the batch axis), from its Conv2D and Dense layers and the shapes Keras derives for them;
    normalization, activations, pooling, resizing and additions are left out (under 1% here)."""
    import keras

    if id(model) not in _FLOP_PROBES:  # building the probe costs seconds for InceptionResNetV2
        layers = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
        _FLOP_PROBES[id(model)] = (model, layers, keras.Model(model.inputs, [layer.output for layer in layers]))
    _, layers, probe = _FLOP_PROBES[id(model)]
    shapes = probe.compute_output_shape((1, *input_shape))
    if len(layers) == 1:
        shapes = [shapes]
    total = 0
    for layer, shape in zip(layers, shapes):
        positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        inputs = int(layer.input.shape[-1])
        if isinstance(layer, keras.layers.Conv2D):
            kernel = int(np.prod(layer.kernel_size)) * inputs // layer.groups
        else:
            kernel = inputs
        total += 2 * positions * int(shape[-1]) * kernel
    return total


def profiler_flops(model, input_shape: tuple) -> int:
    """TensorFlow's own count of float operations for one input (tf.compat.v1 profiler on the frozen graph)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = tf.function(lambda images: model(images, training=False)).get_concrete_function(tf.TensorSpec([1, *input_shape], tf.float32))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=convert_variables_to_constants_v2(function).graph, options=options).total_float_ops)


def mean_ava_size(seed: int = 0, draws: int = 100_000) -> tuple[int, int]:
    """(height, width) of a 4:3 landscape with the mean pixel count of mlsp.embedded's AVA-shaped sizes:
    FLOPs grow with the pixels, so one image of the mean pixel count stands for all."""
    from mlsp import embedded

    sizes = embedded.ava_sizes(draws, seed)
    pixels = float(np.mean(sizes[:, 0] * sizes[:, 1]))
    height = round(math.sqrt(pixels * 3 / 4))
    return height, round(pixels / height)


def pass_inputs(mode: str, augment: bool, mean_size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """(views per image, (height, width) of each view) of an extraction pass, as mlsp.features builds them."""
    from mlsp.features import RESCALED_SIZE, crop_size

    size = (RESCALED_SIZE, RESCALED_SIZE) if mode == "rescaled" else mean_size
    return (8, crop_size(*size)) if augment else (1, size)


def extraction_feed(paths: list[Path], mode: str, augment: bool, preprocess) -> float:
    """Images per second of one thread decoding, cropping and preprocessing an image's views, as
    extraction's worker threads do (mlsp.images.load_rgb, mlsp.features.views)."""
    from mlsp.features import views
    from mlsp.images import load_rgb

    start = time.perf_counter()
    for path in paths:
        preprocess(views(load_rgb(path), mode, augment))
    return len(paths) / (time.perf_counter() - start)


def time_calls(function, argument, reps: int, warm: bool = True) -> float:
    """Median seconds of `reps` calls, after one untimed call (a trace, a first shape) unless `warm` is False."""
    if warm:
        function(argument)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def extraction_forward(backbone, kinds: tuple, view_size: tuple[int, int], reps: int) -> dict:
    """This CPU on the kit's extractor (one traced function for every shape, mlsp.features): seconds
    of the trace, seconds per view at `view_size` with one view per call (median of `reps`), and the
    process's peak RSS (bytes) during those calls.

    How RSS grows with the views of a batch is not measured: this process reuses memory that earlier
    calls (of either network) freed, so a larger batch need not show its own growth here."""
    from mlsp.features import mlsp_model, traced

    forward = traced(mlsp_model(backbone, kinds))
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    forward(rng.uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32))
    trace = time.perf_counter() - start
    one = rng.uniform(-1, 1, (1, *view_size, 3)).astype(np.float32)
    forward(one)  # this shape's first call (its kernels chosen), outside the timing
    reset_peak_rss()
    seconds = time_calls(forward, one, reps, warm=False)
    return {"trace_seconds": trace, "seconds_per_view": seconds, "peak": peak_rss_bytes()}


def head_step(kind: str, channels: int, batch_size: int, reps: int) -> dict:
    """This CPU on one training step of the paper's head for a kind (Single-3FC narrow, Pool-3FC wide),
    compiled as mlsp.train compiles it: seconds per sample, forward FLOPs per sample, peak RSS."""
    from mlsp import heads, train

    shape = feature_shape(kind, channels)
    model = heads.single_3fc(channels) if kind == "narrow" else heads.pool_3fc(channels)
    train.compile_head(model, train.Protocol())
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((batch_size, *shape)).astype(np.float32), np.full(batch_size, 5.0, np.float32)
    reset_peak_rss()
    seconds = time_calls(lambda _: model.train_on_batch(x, y), None, reps)
    return {"head": model.name, "seconds_per_sample": seconds / batch_size, "flops": count_flops(model, shape), "peak": peak_rss_bytes(), "batch": batch_size}


def compute_stage(profile: dict, architectures: dict, specs: list[StoreSpec], store_results: dict, io_results: dict, pool: list[Path],
                  report: Report, reps: int = 1, wide_head_batch: int = 4, finetune_batches: int = 2,
                  gpu_tflops: float = GPU_PEAK_TFLOPS, gpu_utilization: float = GPU_UTILIZATION, check_flops: bool = False) -> dict:
    """Stage 4: FLOPs, this CPU's rates and the image feeds, projected per pass and per epoch here
    and on the assumed GPU. Returns {"passes", "heads", "finetune"} of seconds ("cpu", "gpu")."""
    gpu = gpu_tflops * gpu_utilization * 1e12
    mean_size = mean_ava_size()
    report.note(f"== 4 compute. FLOPs counted on Conv2D + Dense layers; AVA's images as one {mean_size[1]}x{mean_size[0]} image "
                "(4:3, the mean pixel count of mlsp.embedded.ava_sizes); this CPU's FLOP/s from one extractor call per backbone")
    report.note(f"assumed GPU: {GPU_NAME if gpu_tflops == GPU_PEAK_TFLOPS else 'given'} peak {gpu_tflops:g} TFLOP/s x utilization {gpu_utilization:g} "
                f"= {gpu / 1e12:g} TFLOP/s (assumptions, not measurements); training = {TRAIN_FLOPS_PER_FORWARD} x forward FLOPs; "
                f"a feed runs beside the compute (Keras prefetches; extraction decodes in {profile['workers']} threads, assumed to scale "
                "from one), so a stage takes the longest of compute, feed and store writes")
    cpu_rates, passes = extraction_figures(profile, architectures, specs, store_results, io_results, pool, mean_size, gpu, report, reps, check_flops)
    results = {"passes": passes, "heads": head_figures(profile, architectures, io_results, gpu, report, wide_head_batch)}
    if profile["finetune"]:
        results["finetune"] = finetune_figures(profile, architectures, cpu_rates, pool, gpu, report, finetune_batches)
    return results


def extraction_figures(profile, architectures, specs, store_results, io_results, pool, mean_size, gpu, report, reps, check_flops) -> tuple[dict, dict]:
    """Per backbone: the extractor's CPU rate; per pass: FLOPs, feed, and hours here and on the GPU.
    Returns (backbone -> CPU FLOP/s, pass label -> {"flops", "cpu", "gpu"} in seconds)."""
    kinds = tuple(sorted({kind for kinds in profile["passes"].values() for kind in kinds}))
    _, view_size = pass_inputs("original", True, mean_size)
    cpu_rates, passes = {}, {}
    for name in profile["backbones"]:
        backbone = architectures[name]
        forward = extraction_forward(backbone, kinds, view_size, reps)
        view_flops = count_flops(backbone.model, (*view_size, 3))
        cpu_rate = cpu_rates[name] = view_flops / forward["seconds_per_view"]
        report.measured(f"extraction {name} trace", forward["trace_seconds"], "s")
        report.measured(f"extraction {name} forward of one {view_size[1]}x{view_size[0]} view", forward["seconds_per_view"], "s")
        report.measured(f"extraction {name} FLOPs of that view", view_flops / 1e9, "GFLOP")
        if check_flops:
            report.measured(f"extraction {name} FLOPs of that view by the tf profiler", profiler_flops(backbone.model, (*view_size, 3)) / 1e9, "GFLOP")
        report.measured(f"extraction {name} CPU rate", cpu_rate / 1e9, "GFLOP/s")
        report.measured(f"extraction {name} forward peak RSS one view", forward["peak"] / 1e6, "MB")
        for mode in profile["passes"]:
            for augment in profile["augmentation"]:
                views, size = pass_inputs(mode, augment, mean_size)
                flops = views * count_flops(backbone.model, (*size, 3))
                label = f"{name} {mode} {'aug8' if augment else 'whole'}"
                feed = extraction_feed(pool[:FEED_IMAGES], mode, augment, backbone.preprocess)
                # each kind's records at the write rate measured on the 8-view store of that kind
                write_seconds = AVA_ROWS * sum(
                    store_results[spec.name]["record_bytes"] / (io_results[(name, spec.kind)]["write_mbps"] * 1e6)
                    for spec in specs if (spec.backbone, spec.mode, spec.augment) == (name, mode, augment)
                )
                cpu, gpu_compute = AVA_ROWS * flops / cpu_rate, AVA_ROWS * flops / gpu
                feed_seconds = AVA_ROWS / (feed * profile["workers"])
                passes[label] = {"flops": flops, "cpu": max(cpu, write_seconds), "gpu": max(gpu_compute, feed_seconds, write_seconds)}
                report.measured(f"extraction {label} FLOPs per image", flops / 1e9, "GFLOP")
                report.measured(f"extraction {label} feed one thread", feed, "images/s")
                report.projected(f"extraction {label} for AVA here", passes[label]["cpu"] / 3600, "h")
                report.projected(f"extraction {label} for AVA GPU compute", gpu_compute / 3600, "h")
                report.projected(f"extraction {label} for AVA feed at {profile['workers']} threads", feed_seconds / 3600, "h")
                report.projected(f"extraction {label} for AVA store writes", write_seconds / 3600, "h")
                report.projected(f"extraction {label} for AVA on the GPU", passes[label]["gpu"] / 3600, "h")
    report.projected("extraction all passes for AVA here", sum(item["cpu"] for item in passes.values()) / 3600, "h")
    report.projected("extraction all passes for AVA on the GPU", sum(item["gpu"] for item in passes.values()) / 3600, "h")
    return cpu_rates, passes


def head_figures(profile, architectures, io_results, gpu, report, wide_head_batch) -> dict:
    """Per backbone and kind, the paper's head (Single-3FC narrow, Pool-3FC wide): a measured step and
    an epoch over AVA's trainable images, reads included. Returns label -> {"cpu", "gpu"} seconds."""
    results = {}
    for name in profile["backbones"]:
        channels = sum(architectures[name].block_channels())
        for kind in sorted({kind for kinds in profile["passes"].values() for kind in kinds}):
            batch = profile["head_batch"] if kind == "narrow" else min(profile["head_batch"], wide_head_batch)
            step = head_step(kind, channels, batch, 1)  # its trace costs more than several steps
            # reads at the rate measured on the --large store of this kind, when there is one: the larger
            # backbone's, so for the smaller one an upper bound on the time (its views are fewer bytes,
            # but small random reads are bound by the disk's operations per second more than by bytes)
            large = next((item["large"] for (_, other), item in io_results.items() if other == kind and "large" in item), None)
            reads = AVA_TRAINABLE / (large or io_results[(name, kind)])["read_images_per_s"]
            cpu = AVA_TRAINABLE * step["seconds_per_sample"]
            gpu_compute = AVA_TRAINABLE * TRAIN_FLOPS_PER_FORWARD * step["flops"] / gpu
            label = f"{step['head']} {name} {kind}"
            results[label] = {"cpu": max(cpu, reads), "gpu": max(gpu_compute, reads)}
            report.measured(f"head {label} step batch {batch} per sample", step["seconds_per_sample"] * 1e3, "ms")
            report.measured(f"head {label} FLOPs per sample forward", step["flops"] / 1e9, "GFLOP")
            report.measured(f"head {label} training step peak RSS", step["peak"] / 1e6, "MB")
            report.projected(f"head {label} epoch for AVA here", results[label]["cpu"] / 60, "min")
            report.projected(f"head {label} epoch for AVA GPU compute", gpu_compute / 60, "min")
            report.projected(f"head {label} epoch for AVA on the GPU (reads {'from the large store' if large else 'page cache warm'})", results[label]["gpu"] / 60, "min")
    return results


def finetune_figures(profile, architectures, cpu_rates, pool, gpu, report, batches) -> dict:
    """Fine-tuning's image feed (mlsp.finetune.ImageBatches: decode, rescale to 256, random 224 crop
    and flip; one thread, and the kit's FEED_WORKERS threads through Keras' adapter) against what a training step consumes here and on the
    GPU. Returns {"feed", "gpu_rate" (images/s), "cpu", "gpu" (seconds per epoch)}."""
    from mlsp import backbones as zoo
    from mlsp import heads
    from mlsp.finetune import CROP, FEED_WORKERS, ImageBatches

    name, batch = profile["finetune_backbone"], profile["finetune_batch"]
    backbone = architectures.get(name) or zoo.architecture(name)
    channels = sum(backbone.block_channels())
    with stage_memory(report, "finetune feed"):
        paths = np.resize(np.array([str(path) for path in pool], dtype=object), batches * batch)
        images = ImageBatches(paths, np.zeros(len(paths), np.float32), backbone.preprocess, batch_size=batch, augment=True, seed=0)
        start = time.perf_counter()
        for index in range(len(images)):
            images[index]
        feed = len(paths) / (time.perf_counter() - start)
        # the kit's feed: Keras' worker threads, FEED_WORKERS of them (one per core, up to 16)
        from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

        threaded = ImageBatches(paths, np.zeros(len(paths), np.float32), backbone.preprocess, batch_size=batch, augment=True, seed=0, workers=FEED_WORKERS)
        adapter = PyDatasetAdapter(threaded, shuffle=False)
        adapter.on_epoch_begin()
        start = time.perf_counter()
        for _ in adapter.get_numpy_iterator():
            pass
        threaded_feed = len(paths) / (time.perf_counter() - start)
        adapter.on_epoch_end()
    flops = TRAIN_FLOPS_PER_FORWARD * (count_flops(backbone.model, (CROP, CROP, 3)) + count_flops(heads.single_3fc(channels), (channels,)))
    gpu_rate = gpu / flops
    # the backward pass assumed to run at the forward pass's measured FLOP/s
    cpu = AVA_TRAINABLE * flops / cpu_rates.get(name, min(cpu_rates.values()))
    # a GPU host: FEED_WORKERS is one thread per core up to 16; decoding is assumed to scale with them
    host_threads = 16
    result = {"feed": feed, "gpu_rate": gpu_rate, "cpu": max(cpu, AVA_TRAINABLE / threaded_feed), "gpu": AVA_TRAINABLE / min(feed * host_threads, gpu_rate)}
    report.measured(f"finetune feed {name} decode rescale crop one thread", feed, "images/s")
    report.measured(f"finetune feed {name} the kit's {FEED_WORKERS} threads on this machine", threaded_feed, "images/s")
    report.measured(f"finetune {name} training FLOPs per image", flops / 1e9, "GFLOP")
    report.projected(f"finetune {name} GPU consumes", gpu_rate, "images/s")
    report.projected(f"finetune {name} threads to feed the GPU", gpu_rate / feed, "threads")
    report.projected(f"finetune {name} epoch for AVA here", result["cpu"] / 3600, "h")
    report.projected(f"finetune {name} epoch for AVA on the GPU (fed by 16 threads of a 16-core host, assumed to scale)", result["gpu"] / 3600, "h")
    report.projected(f"finetune {name} epoch for AVA on the GPU if fed", AVA_TRAINABLE / gpu_rate / 3600, "h")
    return result


# ---------------------------------------------------------------------------------------- main

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="AVA.txt rows with image files, and images per store (default 2000; 500 with --quick)")
    parser.add_argument("--large", action="store_true", help=f"also read a store {LARGE_FACTOR} x this machine's RAM (minutes, and that much disk)")
    parser.add_argument("--large-gb", type=float, default=None, help=f"size of each --large store (default {LARGE_FACTOR} x RAM; smaller only checks the path)")
    parser.add_argument("--out", type=Path, default=None, help="scratch folder, kept (default: a temporary folder, removed at the end)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and one repetition: a check that it runs, not figures to quote")
    parser.add_argument("--gpu-tflops", type=float, default=GPU_PEAK_TFLOPS, help=f"assumed GPU peak (default {GPU_PEAK_TFLOPS:g}: {GPU_NAME})")
    parser.add_argument("--gpu-utilization", type=float, default=GPU_UTILIZATION, help=f"assumed share of that peak reached (default {GPU_UTILIZATION:g})")
    parser.add_argument("--profile-flops", action="store_true", help="also count each backbone's FLOPs with TensorFlow's profiler (slow)")
    args = parser.parse_args(argv)
    rows = args.rows or (500 if args.quick else 2000)
    pool_images, reps, epochs, wide_head_batch, finetune_batches = (12, 1, 1, 2, 1) if args.quick else (24, 1, 3, 4, 2)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    report = Report()
    report.note("benchmarks/ava_scale.py: AVA (255,530 rows, 20,000 test) at the paper profile's scale")
    report.note("'measured' = timed, counted or sized in this run on this machine; 'projected' = computed from measured figures "
                "by the scaling stated in the '#' line above it (never measured at AVA's size); '#' lines hold the rest, assumptions included")
    report.measured("load average at start", os.getloadavg()[0], "processes")
    report.note(f"machine: {cpu_name()}, {os.cpu_count()} cores (shared with other work: times may be inflated), "
                f"RAM {ram_bytes() / 1e9:.1f} GB; --rows {rows}{' --quick' if args.quick else ''}{' --large' if args.large else ''}")
    with tempfile.TemporaryDirectory(prefix="mlsp-ava-scale-") as temporary:
        work = args.out or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        profile = paper_profile()
        # TensorFlow in every stage's baseline, as in the recorded log: parameter checks and notebook 00 no
        # longer import it (mlsp.names; 00's own peak is ~0.5 GB lower), every later stage does
        import keras  # noqa: F401
        report.note(f"paper profile: backbones {profile['backbones']}, passes {profile['passes']}, augmentation {profile['augmentation']}, "
                    f"batch_images {profile['batch_images']}, workers {profile['workers']}, heads batch {profile['head_batch']}, "
                    f"fine-tuning {profile['finetune_backbone']} batch {profile['finetune_batch']}, verify_images {profile['verify_images']}; "
                    f"an epoch figure is one of up to {profile['max_epochs']} per head row ({profile['finetune_max_epochs']} per fine-tuning row)")
        report.measured("baseline RSS with TensorFlow imported", rss_bytes() / 1e6, "MB")
        pool = make_pool(work / "pool", pool_images, seed=0)
        stage_started = time.perf_counter()
        metadata_stage(work, rows, pool, profile, report)
        report.note(f"stage 1 took {time.perf_counter() - stage_started:.0f} s")

        from mlsp import backbones as zoo
        from mlsp.features import block_boundaries

        architectures = {name: zoo.architecture(name) for name in profile["backbones"]}  # random weights: shapes and speed only
        channels = {name: block_boundaries(backbone)[-1] for name, backbone in architectures.items()}
        report.note("channels per backbone (from the networks): " + ", ".join(f"{name} {count} over {len(architectures[name].block_layers)} blocks" for name, count in channels.items()))
        specs = paper_stores(profile, channels)
        stage_started = time.perf_counter()
        store_results = store_stage(specs, work, rows, report)
        report.note(f"stage 2 took {time.perf_counter() - stage_started:.0f} s")
        stage_started = time.perf_counter()
        io_results = read_write_stage(specs, work, rows, report, profile["head_batch"], epochs, large=args.large,
                                      large_bytes=None if args.large_gb is None else args.large_gb * 1e9)
        report.note(f"stage 3 took {time.perf_counter() - stage_started:.0f} s")
        stage_started = time.perf_counter()
        compute_stage(profile, architectures, specs, store_results, io_results, pool, report, reps, wide_head_batch, finetune_batches,
                      args.gpu_tflops, args.gpu_utilization, args.profile_flops)
        report.note(f"stage 4 took {time.perf_counter() - stage_started:.0f} s")
    report.measured("load average at end", os.getloadavg()[0], "processes")
    report.note(f"run took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
