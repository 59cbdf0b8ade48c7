"""The embedded AVA-format data set: real photos, synthetic degradations, simulated votes.

It lets the whole pipeline run offline. It is NOT human-rated data: each image's latent quality is
a made-up function of the degradations applied to it, of its source photo and (a little) of its
resolution, and its 10-bin vote histogram is drawn from that latent score. Source photos are the
real photographs that ship inside the scikit-image and scikit-learn wheels.

The generator is deterministic for a seed and package versions; MANIFEST.sha256 lets a test check
that a set is byte-identical.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")
DEGRADATIONS = ("blur", "noise", "jpeg", "exposure", "contrast", "colour")
# Latent-score penalty per unit strength (strengths lie in [0, 1]). "fine_noise" is single-pixel grain
# that a 256x256 rescale largely averages away: the full-resolution vs rescaled question has an answer here.
PENALTIES = {"blur": 2.2, "noise": 1.8, "jpeg": 1.6, "exposure": 1.5, "contrast": 1.0, "colour": 0.8, "fine_noise": 1.4}
VOTERS = 200
VOTE_SPREAD = 1.4

DATA_CARD = """# Embedded AVA-format data set (synthetic)

What this is: {n} images in AVA's layout (`images/<id>.jpg`, `AVA.txt`, `generic_test.jpgl`),
made by `mlsp.embedded.generate(seed={seed})`.

- **Photos**: real photographs shipped inside pip wheels (scikit-image `skimage.data`: {skimage};
  scikit-learn `load_sample_images`: china, flower), randomly cropped and rescaled to
  {min_side}-{max_side} px on the long side, with varied aspect ratios.
- **Degradations**: synthetic, of several kinds and graded strengths: {degradations}, and a fine
  single-pixel grain that a 256x256 rescale partly hides.
- **Votes**: simulated, NOT human ratings. A latent quality score is a fixed function of the
  degradations, of a random appeal of each source photo and, a little, of resolution; each image's
  10-bin vote histogram comes from about {voters} simulated voters drawn around that score.
- **Split**: {n_test} ids in the test list (and, with the planted problem cases, one id that
  `AVA.txt` lacks); the reader splits the rest 95% / 5%.

Use it to test and learn the pipeline. Numbers measured on it say nothing about AVA or the paper.
"""


def source_photos() -> dict[str, np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = {}
    for name in SKIMAGE_PHOTOS:
        image = getattr(skimage.data, name)()
        photos[name] = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
    left, right, _ = skimage.data.stereo_motorcycle()
    photos["motorcycle_left"], photos["motorcycle_right"] = left, right
    sample = load_sample_images()
    for filename, image in zip(sample.filenames, sample.images):
        photos[Path(filename).stem] = image
    return photos


def _crop_and_resize(rng, photo: np.ndarray, min_side: int, max_side: int) -> Image.Image:
    height, width = photo.shape[:2]
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.7))))  # width / height, AVA-like spread
    area = rng.uniform(0.35, 1.0) * height * width
    crop_height = int(min(height, np.sqrt(area / aspect)))
    crop_width = int(min(width, crop_height * aspect))
    top = int(rng.integers(0, height - crop_height + 1))
    left = int(rng.integers(0, width - crop_width + 1))
    crop = Image.fromarray(photo[top : top + crop_height, left : left + crop_width])
    long_side = int(rng.integers(min_side, max_side + 1))
    scale = long_side / max(crop.size)
    size = (max(8, int(round(crop.size[0] * scale))), max(8, int(round(crop.size[1] * scale))))
    return crop.resize(size, Image.LANCZOS)


def _degrade(rng, image: Image.Image) -> tuple[Image.Image, dict, int]:
    """Apply a random subset of degradations; returns the image, strengths in [0, 1], JPEG quality."""
    strengths = {name: 0.0 for name in PENALTIES}
    for name in DEGRADATIONS:
        if rng.random() < 0.45:
            strengths[name] = float(rng.uniform(0.15, 1.0))
    if rng.random() < 0.4:
        strengths["fine_noise"] = float(rng.uniform(0.3, 1.0))
    if strengths["blur"]:
        image = image.filter(ImageFilter.GaussianBlur(radius=0.4 + 3.0 * strengths["blur"]))
    if strengths["exposure"]:
        direction = 1 if rng.random() < 0.5 else -1
        image = ImageEnhance.Brightness(image).enhance(1.0 + direction * 0.65 * strengths["exposure"])
    if strengths["contrast"]:
        image = ImageEnhance.Contrast(image).enhance(1.0 - 0.6 * strengths["contrast"])
    if strengths["colour"]:
        image = ImageEnhance.Color(image).enhance(1.0 - 0.9 * strengths["colour"] if rng.random() < 0.6 else 1.0 + 1.5 * strengths["colour"])
    pixels = np.asarray(image, dtype=np.float32)
    if strengths["noise"]:
        # coarse (2-4 px) colour noise survives rescaling
        factor = int(rng.integers(2, 5))
        small = rng.normal(0, 30 * strengths["noise"], size=(pixels.shape[0] // factor + 1, pixels.shape[1] // factor + 1, 3))
        pixels = pixels + np.kron(small, np.ones((factor, factor, 1)))[: pixels.shape[0], : pixels.shape[1]]
    if strengths["fine_noise"]:
        pixels = pixels + rng.normal(0, 18 * strengths["fine_noise"], size=pixels.shape[:2])[..., None]
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    quality = int(round(92 - 82 * strengths["jpeg"])) if strengths["jpeg"] else 92
    return image, strengths, quality


def generate(output_dir, n_images: int, seed: int, min_side: int = 320, max_side: int = 800, test_fraction: float = 0.25, problem_cases: bool = True) -> Path:
    """Write the set in AVA's layout; returns the folder. Same seed and packages -> same bytes."""
    output_dir = Path(output_dir)
    images_dir = output_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = source_photos()
    names = sorted(photos)
    appeal = dict(zip(names, rng.normal(0.0, 0.6, size=len(names))))
    rows, test_ids = [], []
    for index in range(n_images):
        image_id = str(100000 + index)
        source = names[int(rng.integers(len(names)))]
        image = _crop_and_resize(rng, photos[source], min_side, max_side)
        image, strengths, quality = _degrade(rng, image)
        megapixels = image.size[0] * image.size[1] / 1e6
        latent = 8.2 + appeal[source] + 0.6 * megapixels - sum(PENALTIES[name] * value for name, value in strengths.items())
        latent = float(np.clip(latent + rng.normal(0, 0.35), 1.5, 9.0))
        voters = int(rng.poisson(VOTERS))
        votes = np.clip(np.round(rng.normal(latent, VOTE_SPREAD, size=voters)), 1, 10).astype(int)
        counts = np.bincount(votes, minlength=11)[1:]
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        (images_dir / f"{image_id}.jpg").write_bytes(buffer.getvalue())
        rows.append(f"{index + 1} {image_id} " + " ".join(str(c) for c in counts) + f" 0 0 {int(rng.integers(1, 1500))}")
        if rng.random() < test_fraction:
            test_ids.append(image_id)
    if problem_cases:
        # the kinds of trouble real AVA has, so the reader's reports show up in every run
        rows.append(f"{n_images + 1} 999001 " + " ".join(["20"] * 10) + " 0 0 1")  # no image file
        rows.append(f"{n_images + 2} 999002 3 4 5")  # malformed row
        good = (images_dir / "100000.jpg").read_bytes()
        (images_dir / "999003.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
        rows.append(f"{n_images + 3} 999003 " + " ".join(["20"] * 10) + " 0 0 1")
        rows.append(f"{n_images + 4} 100001 " + " ".join(["1"] * 10) + " 0 0 1")  # duplicate id
    listed = test_ids + ["999004"] if problem_cases else test_ids  # a listed test id that AVA.txt lacks
    (output_dir / "AVA.txt").write_text("\n".join(rows) + "\n")
    (output_dir / "generic_test.jpgl").write_text("\n".join(listed) + "\n")
    (output_dir / "DATA_CARD.md").write_text(
        DATA_CARD.format(
            n=n_images, seed=seed, skimage=", ".join(SKIMAGE_PHOTOS + ("stereo_motorcycle",)), min_side=min_side,
            max_side=max_side, degradations=", ".join(DEGRADATIONS), voters=VOTERS, n_test=len(test_ids),
        )
    )
    write_manifest(output_dir)
    return output_dir


def write_manifest(folder: Path) -> Path:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "MANIFEST.sha256"):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(folder).as_posix()}")
    manifest = folder / "MANIFEST.sha256"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def manifest_digest(folder) -> str:
    """One digest for the whole set: equal digests mean byte-identical sets."""
    return hashlib.sha256((Path(folder) / "MANIFEST.sha256").read_bytes()).hexdigest()
