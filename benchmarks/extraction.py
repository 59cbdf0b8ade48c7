"""Extraction speed and memory on AVA-shaped images, every comparison side by side in one run.

    python benchmarks/extraction.py [--images 12] [--images-per-size 6] [--min-side 240] [--max-side 320]
        [--backbone efficientnet_lite0 | inception_v3 | inception_resnet_v2] [--weights random]
        [--batch-images 8] [--workers 2]

The images: an AVA-shaped embedded set (mlsp.embedded, shape "ava": sizes drawn from an approximation
of AVA's size distribution, greyscale, CMYK, progressive and PNG files among them), at a reduced scale
(--max-side; AVA's is 800 px) so that a run takes minutes on 2 CPU cores. AVA repeats its sizes (about
10 images per size), which a few dozen draws hardly do, so the set shares ceil(images / images-per-size)
sizes (mlsp.embedded.repeated_ava_sizes): equal-size full-resolution batching then has something to
batch. Weights are "random" by default: speed does not depend on them, and the Inceptions' ImageNet
weights cannot be downloaded offline.

Each comparison prints `ratio <what>: <value>` lines: for timed runs two, images/s (wall clock) and
images per CPU second (this process's threads: on a shared machine the wall clock measures the share
of the cores a run got, CPU seconds the work it did), first over second; for memory one, the larger
run's peak over the smaller's:
1. The kit's extractor (decoding in --workers threads, one traced function for every shape,
   --batch-images images of equal size per pass) against a naive loop in the authors' style (decode,
   then one crop at a time, batch of one, a fresh eager forward call per crop), on the same images,
   full resolution, narrow + wide features, 8 views. The kit's time includes its trace.
2. Rescaled inputs (one shape for every image): one image per forward pass against --batch-images,
   narrow features, 8 views.
3. Full-resolution inputs: one image per forward pass against --batch-images images of equal size
   (taken in order of size), narrow + wide features, 8 views; the features of both are compared too
   (`check` line; tests/test_extract.py asserts that equality).
   In 2 and 3 the single and batched runs share one traced function, traced before the timings.
4. Peak memory of an extraction process (a subprocess each) for N and 4N images (full resolution,
   narrow + wide, one view per image, to keep 4N affordable): it must not grow with N.

Recorded: benchmarks/measured/extraction.log, the output of one run of `benchmarks/extraction.py` with
the defaults above (EfficientNet-Lite0, random weights, 12 images of 2 sizes at most 320 px, 8 images
per pass, 2 workers), under `nice -n 19` on the kit's build machine (2 cores of an AMD EPYC, 25 GB of
RAM) while other jobs of ours kept the load average at 5-8: the run got about a third of one core, so
its images/s are low and its wall-clock ratios noisy; the per-CPU-second ratios are the steadier ones.
There, on a CPU, batches of several images were slower than one image per pass (ratios 0.67-0.83):
the batch is for GPUs. No InceptionResNetV2 run is recorded: one forward pass of 8 views of 280x210 px
took 5.8 s here (random weights, same conditions), which puts even 12 images past minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

BACKBONE_CHOICES = ("efficientnet_lite0", "inception_v3", "inception_resnet_v2")

MEMORY_PROBE = """
import json, resource, sys
from mlsp import backbones, data, extract
ava, out, n, name, weights, workers, batch_images = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
metadata, _, _ = data.build_metadata(ava, seed=0, progress=False)
metadata = metadata.sort_values("image_id").head(n)
backbone = backbones.load(name, weights)
summaries = extract.run_extraction(metadata, ava, backbone, out, {"original": ["narrow", "wide"]}, [False], workers=workers, progress=False, batch_images=batch_images)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "bytes": sum(sum(s["bytes"].values()) for s in summaries), "images": n}))
"""


def ratio_line(what: str, value: float) -> str:
    """`ratio <what>: <value>`, the one format of every comparison (a value to 3 significant digits).

    Raises ValueError for an empty `what` or one holding ':' (the line would not parse back)."""
    if not what.strip() or ":" in what:
        raise ValueError(f"a ratio needs a name without ':', got {what!r}")
    return f"ratio {what.strip()}: {value:.3g}"


def size_summary(sizes: list[tuple[int, int]]) -> str:
    """'W x H: count' for each distinct size, most frequent first."""
    return ", ".join(f"{width}x{height}: {count}" for (width, height), count in Counter(sizes).most_common())


class CountingForward:
    """The traced network, recording the images in each forward pass (views / views per image)."""

    def __init__(self, forward, views_per_image: int = 8):
        self.forward, self.views_per_image, self.images_per_pass = forward, views_per_image, []

    def __call__(self, batch):
        self.images_per_pass.append(len(batch) // self.views_per_image)
        return self.forward(batch)


def naive(backbone, paths, kinds=("narrow", "wide")) -> dict:
    """The authors' style: {(path, view): {kind: float16 features}}, one eager call per crop."""
    from mlsp.features import augmented_views, mlsp_model
    from mlsp.images import load_rgb

    model = mlsp_model(backbone, kinds)
    stored = {}
    for path in paths:
        image = load_rgb(path)
        for view, crop in enumerate(augmented_views(image)):
            outputs = model(backbone.preprocess(crop[None]), training=False)  # eager, batch of one
            stored[(str(path), view)] = {kind: np.asarray(outputs[kind]).astype(np.float16) for kind in kinds}
    return stored


class Clock:
    """Wall-clock and CPU seconds (this process, all its threads) of a `with` block.

    On a shared machine the wall clock measures the share of the cores a run got as much as the run;
    CPU seconds measure the work it did (but not what threads overlapped), so both are reported."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exception):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def rates(self, images: int) -> tuple[float, float]:
        """(images per wall-clock second, images per CPU second)."""
        return images / self.wall, images / self.cpu

    def describe(self, images: int) -> str:
        wall, cpu = self.rates(images)
        return f"{wall:6.2f} images/s, {cpu:6.2f} images per CPU second ({self.wall:.1f} s, {self.cpu:.1f} CPU s)"


def print_ratios(what: str, first: Clock, second: Clock, images: int) -> None:
    """The two ratio lines of a comparison of timed runs: images/s, and images per CPU second."""
    (first_wall, first_cpu), (second_wall, second_cpu) = first.rates(images), second.rates(images)
    print(ratio_line(f"{what}, images/s", first_wall / second_wall))
    print(ratio_line(f"{what}, images per CPU second", first_cpu / second_cpu), flush=True)


def timed_extraction(ids, paths, backbone, mode, kinds, folder, forward, batch_images, workers, sizes=None) -> tuple[Clock, list[int]]:
    """(its Clock, images per forward pass) of one 8-view pass of mlsp.extract.extract with `forward`.

    Raises RuntimeError when an image is skipped: the rates would then compare different work."""
    from mlsp import extract

    counting = CountingForward(forward)
    with Clock() as clock:
        summary = extract.extract(ids, paths, backbone, mode, True, kinds, folder, workers=workers, progress=False, extractor=counting, batch_images=batch_images, sizes=sizes)
    if summary["skipped"]:
        raise RuntimeError(f"{len(summary['skipped'])} image(s) skipped, e.g. {summary['skipped'][0]['reason']}; use larger --min-side / --max-side")
    return clock, counting.images_per_pass


def largest_difference(folder_a, folder_b, backbone_name: str, mode: str, kinds) -> float:
    """Largest |a - b| over the stored 8-view features of two extractions of the same images."""
    from mlsp.store import FeatureReader, store_path

    largest = 0.0
    for kind in kinds:
        with FeatureReader(store_path(folder_a, backbone_name, mode, kind, True)) as a, FeatureReader(store_path(folder_b, backbone_name, mode, kind, True)) as b:
            largest = max(largest, float(np.abs(a.read_all().astype(np.float32) - b.read_all().astype(np.float32)).max()))
    return largest


def batched_against_single(ids, paths, backbone, mode, kinds, work, forward, args, sizes=None) -> tuple[Clock, Clock, float]:
    """(batched Clock, single Clock, largest feature difference) of one pass, printing both rates."""
    clocks = {}
    for batch_images in (1, args.batch_images):
        clocks[batch_images], passes = timed_extraction(ids, paths, backbone, mode, kinds, work / f"{mode}{batch_images}", forward, batch_images, args.workers, sizes)
        print(f"{mode}, up to {batch_images:2d} image(s) per pass: {clocks[batch_images].describe(len(ids))}; {len(passes)} forward passes (images per pass: {', '.join(map(str, passes))})", flush=True)
    return clocks[args.batch_images], clocks[1], largest_difference(work / f"{mode}1", work / f"{mode}{args.batch_images}", backbone.name, mode, kinds)


def memory_probe(ava, folder, n: int, args) -> dict:
    """{peak_rss_mb, bytes, images} of one extraction of the set's first n images, in a fresh process."""
    command = [sys.executable, "-c", MEMORY_PROBE, str(ava), str(folder), str(n), args.backbone, args.weights, str(args.workers), str(args.batch_images)]
    output = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def conditions() -> str:
    """One line: CPU, cores, load average (1, 5, 15 min), this process's niceness."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{cpu_name()}, {os.cpu_count()} cores, load average {load}, nice {os.nice(0)}"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12, help="N: images per comparison (the set holds 4N, for the memory probe)")
    parser.add_argument("--images-per-size", type=int, default=6, help="images sharing each size (AVA: about 10)")
    parser.add_argument("--min-side", type=int, default=240)
    parser.add_argument("--max-side", type=int, default=320, help="the longest side in px (AVA: 800)")
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONE_CHOICES)
    parser.add_argument("--weights", default="random", help="random, imagenet or a weights file; speed does not depend on them")
    parser.add_argument("--batch-images", type=int, default=8, help="images of equal size per forward pass, batched runs")
    parser.add_argument("--workers", type=int, default=2, help="decode threads")
    parser.add_argument("--seed", type=int, default=11)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    started = time.perf_counter()
    print(f"command: benchmarks/extraction.py {' '.join(sys.argv[1:])}")
    print(f"machine at start: {conditions()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mlsp-bench-") as folder:  # the set and every store, deleted at the end
        run_comparisons(args, Path(folder))
    print(f"\nmachine at end: {conditions()}")
    print(f"total: {time.perf_counter() - started:.0f} s")


def run_comparisons(args: argparse.Namespace, work: Path) -> None:
    """Make the set in `work`, then print the four comparisons."""
    from mlsp import backbones, data, embedded, extract
    from mlsp.features import mlsp_model, traced

    sizes = embedded.repeated_ava_sizes(args.images, args.images_per_size, args.seed, args.min_side, args.max_side)
    # the memory probe's 4N images repeat the N images' sizes four times
    ava = embedded.generate(work / "ava", 4 * args.images, seed=args.seed, min_side=args.min_side, max_side=args.max_side, problem_cases=False, shape="ava", sizes=np.tile(sizes, (4, 1)))
    metadata, _, _ = data.build_metadata(ava, seed=0, progress=False)
    subset = metadata.sort_values("image_id").head(args.images)
    ids, paths = list(subset["image_id"]), data.image_paths(subset, ava)
    subset_sizes = list(zip(subset["width"].astype(int), subset["height"].astype(int)))
    backbone = backbones.load(args.backbone, args.weights)
    print(f"{args.images} AVA-shaped images ({4 * args.images} in the set), sizes {size_summary(subset_sizes)}")
    print(f"backbone {args.backbone} ({args.weights} weights), batch_images {args.batch_images}, workers {args.workers}", flush=True)

    print("\n== 1 kit extractor against a naive per-crop loop: full resolution, narrow + wide, 8 views")
    with Clock() as kit:
        extract.run_extraction(subset, ava, backbone, work / "kit", {"original": ["narrow", "wide"]}, [True], workers=args.workers, progress=False, batch_images=args.batch_images)
    print(f"kit extractor: {kit.describe(args.images)}, trace included", flush=True)
    with Clock() as loop:
        naive(backbone, paths)
    print(f"naive loop   : {loop.describe(args.images)}")
    print_ratios("kit extractor / naive per-crop loop, full resolution", kit, loop, args.images)

    for section, mode, kinds in (("2", "rescaled", ("narrow",)), ("3", "original", ("narrow", "wide"))):
        forward = traced(mlsp_model(backbone, kinds))
        forward(np.zeros((1, 224, 224, 3), np.float32))  # trace once, outside the timings: the signature serves every shape
        what = "rescaled 256 px" if mode == "rescaled" else "full resolution, equal sizes"
        print(f"\n== {section} {what}: one image per pass against up to {args.batch_images}, {' + '.join(kinds)}, 8 views")
        batched, single, difference = batched_against_single(ids, paths, backbone, mode, kinds, work, forward, args, subset_sizes if mode == "original" else None)
        print(f"check batched vs single features, {mode}: largest |difference| {difference:.2g} (float16 stores)")
        print_ratios(f"batched / single, {what}, {args.batch_images} images per pass", batched, single, args.images)

    memory_started = time.perf_counter()
    print(f"\n== 4 peak memory of an extraction process: N = {args.images} and 4N = {4 * args.images} images, full resolution, narrow + wide, one view")
    small, large = (memory_probe(ava, work / f"memory{n}", n, args) for n in (args.images, 4 * args.images))
    print(f"peak memory: {small['peak_rss_mb']:.0f} MB for {args.images} images, {large['peak_rss_mb']:.0f} MB for {4 * args.images} images")
    print(f"bytes / image: {large['bytes'] / large['images'] / 1e6:.3f} MB (narrow + wide, one view, float16)")
    print(ratio_line(f"peak memory {4 * args.images} / {args.images} images", large["peak_rss_mb"] / small["peak_rss_mb"]))
    print(f"(two probe processes: {time.perf_counter() - memory_started:.0f} s)")


if __name__ == "__main__":
    main()
