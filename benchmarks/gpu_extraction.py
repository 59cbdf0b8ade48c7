"""Extraction speed on a GPU machine without TensorFlow: the kit's extractor under Keras 3 on JAX (or
PyTorch), on an AVA-shaped embedded set, with projected hours for AVA (255,530 images; 20,000 test).

    MLSP_ALLOW_BACKEND=jax KERAS_BACKEND=jax python benchmarks/gpu_extraction.py \\
        [--images 96] [--original-sizes 6] [--backbone inception_resnet_v2] [--weights random] [--log FILE]

The kit extracts on TensorFlow, whose one shape-generic tf.function serves every image size. A GPU
machine here may hold no TensorFlow (and no room to carry a TensorFlow GPU wheel); Keras 3 then runs
the same network, the same views and the same batching on JAX, where `mlsp.features.traced` is the
model's predict_on_batch, compiled by XLA once per input shape, and the wide features' area resize is
mlsp.features.AreaResize (the same numbers as TensorFlow's). What that changes, measured here:
  - every new input shape costs an XLA compile, which TensorFlow's shape-generic trace does not pay;
    it is reported apart from the steady rate, and so is what AVA's distinct sizes would cost;
  - the network's steady rate is XLA's, not TensorFlow's: a lead for the TensorFlow GPU path, not its
    measurement.
Weights: "random" by default (no ImageNet weights offline); speed does not depend on them.

Sections, each printed as soon as it is measured (lines `rate <what>: <images/s>`,
`compile <what>: <s>`, `projected AVA hours <what>: <h>`):
  rescaled: the paper's rescaled pass (narrow features, 8 views of 224 px crops of the 256 px image),
      `--batch-images` 1 and 16 images per forward pass, steady state (each batch shape compiled
      before the timing, compile time reported), and the network alone on ready batches.
  original: the paper's full-resolution pass (narrow + wide, 8 views), `--batch-images` images of
      equal size per pass, on the images of `--original-sizes` distinct sizes from the set (each new
      size is a new XLA compile, so the number of sizes is capped): a cold pass (compiles included)
      and warm passes over the same images (steady).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

AVA_IMAGES = 255_530
AVA_TEST = 20_000
AVA_DISTINCT_SIZES_ASSUMED = 25_000
LOG = None


def say(line: str = "") -> None:
    print(line, flush=True)
    if LOG is not None:
        with open(LOG, "a") as handle:
            handle.write(line + "\n")


def hours(images: int, rate: float) -> float:
    return images / rate / 3600


def environment() -> dict:
    import keras

    backend = keras.backend.backend()
    info = {"backend": backend, "keras": keras.__version__, "python": sys.version.split()[0]}
    if backend == "jax":
        import jax

        info.update(jax=jax.__version__, devices=[str(device) for device in jax.devices()], device_kind=jax.devices()[0].device_kind)
    elif backend == "torch":
        import torch

        info.update(torch=torch.__version__, cuda=torch.cuda.is_available(), device_kind=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    for key, value in info.items():
        say(f"env {key}: {value}")
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        say(f"env nvidia-smi: {smi.stdout.strip() or smi.stderr.strip()}")
    except (OSError, subprocess.TimeoutExpired) as error:
        say(f"env nvidia-smi: unavailable ({error})")
    return info


def peak_memory_gb() -> float | None:
    import keras

    try:
        if keras.backend.backend() == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use", 0) / 1e9 or None
        if keras.backend.backend() == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None
    except Exception:  # memory statistics are a nicety
        return None
    return None


def first_and_steady_call(forward, batch: np.ndarray, repeats: int = 3) -> tuple[float, float]:
    """(seconds of the first call on this shape, median seconds of `repeats` later calls)."""
    start = time.perf_counter()
    forward(batch)
    first = time.perf_counter() - start
    later = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(batch)
        later.append(time.perf_counter() - start)
    return first, float(np.median(later))


def ava_group_shapes(batch_images: int, seed: int = 7) -> dict:
    """Distinct sizes in an AVA-shaped size list of AVA's length (mlsp.embedded.ava_sizes), and the
    distinct (images per batch, size) pairs the kit's size-sorted batching would feed the network."""
    from mlsp import embedded

    counts = Counter(map(tuple, embedded.ava_sizes(AVA_IMAGES, seed).tolist()))
    shapes = set()
    for size, count in counts.items():
        full, rest = divmod(count, batch_images)
        if full:
            shapes.add((batch_images, size))
        if rest:
            shapes.add((rest, size))
    return {"distinct_sizes": len(counts), "distinct_batch_shapes": len(shapes)}


def extract_rate(extract, ids, paths, backbone, mode, kinds, folder, forward, batch_images, workers, sizes=None) -> float:
    start = time.perf_counter()
    summary = extract.extract(ids, paths, backbone, mode, True, kinds, folder, workers=workers, progress=False, extractor=forward, batch_images=batch_images, sizes=sizes)
    seconds = time.perf_counter() - start
    if summary["skipped"]:
        say(f"note: {len(summary['skipped'])} image(s) skipped: {summary['skipped'][0]['reason']}")
    return summary["extracted"] / seconds


def rescaled_section(results, backbone, ids, paths, args, work) -> None:
    from mlsp import extract
    from mlsp.features import augmented_views, mlsp_model, prepare, traced
    from mlsp.images import load_rgb

    say(f"\n== rescaled pass: narrow, 8 views of 224x224, {len(ids)} images, workers {args.workers}")
    forward = traced(mlsp_model(backbone, ("narrow",)))
    views = backbone.preprocess(augmented_views(prepare(load_rgb(paths[0]), "rescaled")))
    for batch_images in sorted({1, args.batch_images}):
        batch = np.concatenate([views] * batch_images)
        first, steady = first_and_steady_call(forward, batch)
        results[f"rescaled compile s b{batch_images}"] = first - steady
        results[f"rescaled network images/s b{batch_images}"] = batch_images / steady
        say(f"compile rescaled b{batch_images} (batch {batch.shape}): {first - steady:.1f} s (first call {first:.1f} s)")
        say(f"rate rescaled network only b{batch_images}: {batch_images / steady:.1f} images/s ({steady * 1e3:.1f} ms per batch of {batch_images * 8} crops)")
        rate = extract_rate(extract, ids, paths, backbone, "rescaled", ("narrow",), work / f"rescaled_b{batch_images}", forward, batch_images, args.workers)
        results[f"rescaled kit images/s b{batch_images}"] = rate
        say(f"rate rescaled kit extractor b{batch_images}: {rate:.1f} images/s (decode, crop, network, store)")
        say(f"projected AVA hours rescaled aug8 b{batch_images}: {hours(AVA_IMAGES, rate):.2f} (test 20,000: {hours(AVA_TEST, rate):.2f})")


def original_section(results, backbone, metadata, ava, args, work) -> None:
    from mlsp import data, extract
    from mlsp.backbones import min_image_side
    from mlsp.features import crop_size, mlsp_model, traced

    smallest = min_image_side(backbone.name, True)
    usable = metadata[np.minimum(metadata["width"], metadata["height"]) >= smallest]
    by_size = usable.groupby(["width", "height"], sort=False)
    n_sizes = args.original_sizes
    if results.get("rescaled compile s b1") is not None and args.deadline is not None:  # as many sizes as the time left allows
        per_shape_guess = 1.5 * max(value for key, value in results.items() if key.startswith("rescaled compile s")) + 3
        affordable = int((args.deadline - time.perf_counter() - args.reserve_s) // per_shape_guess)
        if affordable < n_sizes:
            say(f"note: {max(2, affordable)} sizes instead of {n_sizes}: {args.deadline - time.perf_counter():.0f} s left, about {per_shape_guess:.0f} s per size")
            n_sizes = max(2, affordable)
    chosen_sizes = list(by_size.size().sort_values(ascending=False, kind="stable").index[:n_sizes])
    subset = usable[[size in set(chosen_sizes) for size in zip(usable["width"], usable["height"])]]
    ids, paths = list(subset["image_id"]), data.image_paths(subset, ava)
    sizes = list(zip(subset["width"], subset["height"]))
    groups = Counter(sizes)
    batch_shapes = {(min(count, args.batch_images), crop_size(height, width)) for (width, height), count in groups.items()}
    say(f"\n== original pass: narrow + wide, 8 views at full resolution, batch_images {args.batch_images}, workers {args.workers}")
    say(f"images: {len(ids)} of {len(metadata)} in the set, the {len(groups)} most frequent of its {metadata[['width', 'height']].drop_duplicates().shape[0]} distinct sizes "
        f"({', '.join(f'{w}x{h}:{n}' for (w, h), n in groups.items())}); distinct network input shapes: {len(batch_shapes)}")
    forward = traced(mlsp_model(backbone, ("narrow", "wide")))
    start = time.perf_counter()
    cold = extract_rate(extract, ids, paths, backbone, "original", ("narrow", "wide"), work / "original_cold", forward, args.batch_images, args.workers, sizes)
    cold_seconds = time.perf_counter() - start
    warm_seconds, warm_images = 0.0, 0
    for index in range(args.warm_passes):
        start = time.perf_counter()
        extract_rate(extract, ids, paths, backbone, "original", ("narrow", "wide"), work / f"original_warm{index}", forward, args.batch_images, args.workers, sizes)
        warm_seconds += time.perf_counter() - start
        warm_images += len(ids)
    warm = warm_images / warm_seconds
    per_shape = max(0.0, cold_seconds - len(ids) / warm) / len(batch_shapes)
    results.update({
        "original sizes": len(groups), "original images": len(ids), "original distinct shapes": len(batch_shapes), "original cold images/s": cold,
        "original warm images/s": warm, "original compile s per shape": per_shape,
    })
    say(f"rate original cold (compiles included): {cold:.2f} images/s ({cold_seconds:.1f} s for {len(ids)} images)")
    say(f"rate original warm ({args.warm_passes} passes, shapes compiled): {warm:.2f} images/s")
    say(f"compile original per shape: {per_shape:.1f} s ((cold - warm time) / {len(batch_shapes)} shapes)")
    say(f"projected AVA hours original aug8 steady: {hours(AVA_IMAGES, warm):.2f} (test 20,000: {hours(AVA_TEST, warm):.2f})")
    ava_shapes = ava_group_shapes(args.batch_images)
    results.update({f"ava {key}": value for key, value in ava_shapes.items()})
    for label, count in (("assumed 25,000 sizes", AVA_DISTINCT_SIZES_ASSUMED), (f"generator's {ava_shapes['distinct_sizes']} sizes", ava_shapes["distinct_sizes"]),
                         (f"generator's {ava_shapes['distinct_batch_shapes']} batch shapes at batch_images {args.batch_images}", ava_shapes["distinct_batch_shapes"])):
        say(f"projected AVA compile hours original ({label}): {count * per_shape / 3600:.1f} (per-shape compiles; TensorFlow's shape-generic trace pays none)")


def second_backend(results, args, ava, started) -> None:
    """The same sections under another Keras backend, in a subprocess (a process has one backend)."""
    left = args.deadline - time.perf_counter() if args.deadline else 600
    if left < 45:
        say(f"\n== {args.second_backend}: skipped, {left:.0f} s left")
        return
    sections = "original,rescaled" if left > 150 else "original"
    say(f"\n== {args.second_backend} backend ({sections}), in a subprocess, {left:.0f} s left")
    command = [sys.executable, __file__, "--ava", str(ava), "--sections", sections, "--backbone", args.backbone, "--weights", args.weights,
               "--batch-images", str(args.batch_images), "--workers", str(args.workers), "--original-sizes", str(results.get("original sizes", args.original_sizes)),
               "--warm-passes", "1", "--images", str(args.images)]
    environ = dict(os.environ, KERAS_BACKEND=args.second_backend, MLSP_ALLOW_BACKEND=args.second_backend, PYTHONUNBUFFERED="1")
    try:
        process = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=max(10, left - 10))
        output, code = process.stdout + process.stderr[-3000:], process.returncode
    except subprocess.TimeoutExpired as error:
        output, code = (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else (error.stdout or ""), "timeout"
    for line in output.splitlines():
        say(f"{args.second_backend}| {line}")
    say(f"{args.second_backend}| exit: {code}")


def main() -> None:
    global LOG
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96, help="AVA-shaped images to generate (a multiple of --batch-images)")
    parser.add_argument("--original-sizes", type=int, default=6, help="distinct image sizes in the original pass (one compile each)")
    parser.add_argument("--warm-passes", type=int, default=3)
    parser.add_argument("--backbone", default="inception_resnet_v2")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--batch-images", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-side", type=int, default=320)
    parser.add_argument("--max-side", type=int, default=800)
    parser.add_argument("--sections", default="rescaled,original")
    parser.add_argument("--ava", help="an AVA-shaped set made earlier (else one is generated)")
    parser.add_argument("--budget-s", type=float, help="seconds this run may take: fewer original sizes, and no second backend, when short")
    parser.add_argument("--reserve-s", type=float, default=60, help="seconds of the budget kept back for the second backend")
    parser.add_argument("--second-backend", help="also run the original (and rescaled, time permitting) sections under this Keras backend in a subprocess, e.g. torch (eager: no per-shape compile)")
    parser.add_argument("--log")
    parser.add_argument("--json")
    args = parser.parse_args()
    LOG = args.log
    started = time.perf_counter()
    args.deadline = started + args.budget_s if args.budget_s else None

    from mlsp import backbones, data, embedded

    say(f"command: {' '.join(sys.argv)}")
    results = {"environment": environment(), "arguments": vars(args)}
    work = Path(tempfile.mkdtemp(prefix="mlsp-gpu-bench-"))
    start = time.perf_counter()
    ava = Path(args.ava) if args.ava else embedded.generate(work / "ava", args.images, seed=args.seed, min_side=args.min_side, max_side=args.max_side, problem_cases=False, shape="ava")
    metadata, _, _ = data.build_metadata(ava, seed=0, progress=False)
    say(f"set: {len(metadata)} AVA-shaped images, {metadata['width'].min()}-{metadata['width'].max()} px wide, {metadata[['width', 'height']].drop_duplicates().shape[0]} distinct sizes ({time.perf_counter() - start:.1f} s to make and read)")
    start = time.perf_counter()
    backbone = backbones.load(args.backbone, args.weights)
    backbones.min_input_side(args.backbone)  # builds the architecture once, outside the timings
    say(f"backbone: {args.backbone} ({args.weights} weights), {len(backbone.block_layers)} blocks, {sum(backbone.block_channels())} channels ({time.perf_counter() - start:.1f} s to build)")

    for section in args.sections.split(","):  # in the order given
        if section == "rescaled":
            rescaled_section(results, backbone, list(metadata["image_id"]), data.image_paths(metadata, ava), args, work)
        elif section == "original":
            original_section(results, backbone, metadata, ava, args, work)
        else:
            raise SystemExit(f"unknown section {section!r}: rescaled, original")
    memory = peak_memory_gb()
    results["peak GPU memory GB"] = memory
    say(f"\npeak GPU memory: {memory if memory is None else f'{memory:.1f} GB'}")
    if args.second_backend:
        second_backend(results, args, ava, started)
    say(f"total: {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
