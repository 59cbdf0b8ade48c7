"""Extraction speed and memory, measured side by side in one run.

    python benchmarks/extraction.py [--images 12] [--max-side 640] [--backbone efficientnet_lite0]

1. The kit's extractor (decoding in worker threads, one traced function for every shape, 8 views
   per batch) against a naive loop in the authors' style (decode, then one crop at a time, batch of
   one, a fresh eager forward call per crop), on the same images, narrow + wide features.
   Target: a ratio of at least 3 on CPU.
2. Rescaled inputs (one shape for every image), one image per forward pass against
   `--batch-images` images per pass, same images, narrow features: `ratio batched/single rescaled`.
   On a CPU the network is near its bound either way; the batch is for GPUs.
3. Peak memory of an extraction process for N and 4N images: it must not grow with N.
4. Bytes written per image.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MEMORY_PROBE = """
import json, resource, sys
from mlsp import backbones, data, extract
ava, out, n, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
metadata, _, _ = data.build_metadata(ava, seed=0, progress=False)
metadata = metadata.head(n)
backbone = backbones.load(name, "imagenet")
summaries = extract.run_extraction(metadata, ava, backbone, out, {"original": ["narrow", "wide"]}, [True], progress=False)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "bytes": sum(sum(s["bytes"].values()) for s in summaries), "images": n}))
"""


def naive(backbone, paths, kinds=("narrow", "wide")):
    from mlsp.images import load_rgb
    from mlsp.features import augmented_views, mlsp_model

    model = mlsp_model(backbone, kinds)
    stored = {}
    for path in paths:
        image = load_rgb(path)
        for view, crop in enumerate(augmented_views(image)):
            outputs = model(backbone.preprocess(crop[None]), training=False)  # eager, batch of one
            stored[(str(path), view)] = {kind: np.asarray(outputs[kind]).astype(np.float16) for kind in kinds}
    return stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--batch-images", type=int, default=8)
    args = parser.parse_args()

    from mlsp import backbones, data, embedded, extract

    work = Path(tempfile.mkdtemp(prefix="mlsp-bench-"))
    ava = embedded.generate(work / "ava", 4 * args.images, seed=11, min_side=args.max_side // 2, max_side=args.max_side, problem_cases=False)
    metadata, _, _ = data.build_metadata(ava, seed=0, progress=False)
    subset = metadata.head(args.images)
    paths = [data.image_path(ava, image_id) for image_id in subset["image_id"]]
    backbone = backbones.load(args.backbone, args.weights)
    print(f"{args.images} images, {subset['width'].min()}-{subset['width'].max()} px wide, {subset[['width', 'height']].drop_duplicates().shape[0]} distinct sizes, backbone {args.backbone}")

    start = time.perf_counter()
    extract.run_extraction(subset, ava, backbone, work / "kit", {"original": ["narrow", "wide"]}, [True], progress=False)
    kit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    naive(backbone, paths)
    naive_seconds = time.perf_counter() - start
    kit_rate, naive_rate = args.images / kit_seconds, args.images / naive_seconds
    print(f"kit extractor : {kit_rate:6.2f} images/s ({kit_seconds:.1f} s, trace included)")
    print(f"naive loop    : {naive_rate:6.2f} images/s ({naive_seconds:.1f} s)")
    print(f"ratio         : {kit_rate / naive_rate:6.2f}x   (target >= 3)")
    print(f"ratio kit/naive: {kit_rate / naive_rate:.2f}")

    from mlsp.features import mlsp_model, traced

    forward = traced(mlsp_model(backbone, ("narrow",)))
    ids = list(subset["image_id"])
    extract.extract(ids, paths, backbone, "rescaled", True, ("narrow",), work / "warm", progress=False, extractor=forward)  # trace once, outside the timing
    seconds = {}
    for batch_images in (1, args.batch_images):
        start = time.perf_counter()
        extract.extract(ids, paths, backbone, "rescaled", True, ("narrow",), work / f"rescaled{batch_images}", progress=False, extractor=forward, batch_images=batch_images)
        seconds[batch_images] = time.perf_counter() - start
        print(f"rescaled, {batch_images:2d} image(s) per pass: {args.images / seconds[batch_images]:6.2f} images/s")
    print(f"ratio batched/single rescaled: {seconds[1] / seconds[args.batch_images]:.2f}")

    probes = {}
    for n in (args.images, 4 * args.images):
        output = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(ava), str(work / f"memory{n}"), str(n), args.backbone], capture_output=True, text=True, check=True)
        probes[n] = json.loads(output.stdout.strip().splitlines()[-1])
    small, large = probes[args.images], probes[4 * args.images]
    print(f"peak memory   : {small['peak_rss_mb']:.0f} MB for {args.images} images, {large['peak_rss_mb']:.0f} MB for {4 * args.images} images (ratio {large['peak_rss_mb'] / small['peak_rss_mb']:.2f})")
    print(f"bytes / image : {large['bytes'] / large['images'] / 1e6:.2f} MB (narrow + wide, 8 views, float16)")


if __name__ == "__main__":
    main()
