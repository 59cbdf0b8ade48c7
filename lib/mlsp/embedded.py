"""The embedded AVA-format data set: real photos, synthetic degradations, simulated votes.

It lets the whole pipeline run offline. It is NOT human-rated data: each image's latent quality is
a made-up function of the degradations applied to it, of its source photo and (a little) of its
resolution, and its 10-bin vote histogram is drawn from that latent score. Source photos are the
real photographs that ship inside the scikit-image and scikit-learn wheels.

Two shapes: "uniform" (the demo and smoke sets: long sides uniform in [min_side, max_side]) and
"ava" (sizes drawn from an approximation of AVA's size distribution, many of them repeated as in AVA,
plus the file oddities real AVA has: greyscale, CMYK and progressive JPEGs, a PNG under a .jpg name,
and with `problem_cases` an image too small for the Inceptions and a full-resolution panorama that
notebook 00 accepts and extraction must skip), so that a rehearsal meets what the paper's run meets.

The generator is deterministic for a seed and package versions; MANIFEST.sha256 lets a test check
that a set is byte-identical.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from mlsp import images

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

SHAPES = ("uniform", "ava")
# AVA-shaped sizes: an approximation, as no AVA is at hand to measure. AVA's images are at most 800 px
# on the longer side, with a mean of about 629 x 497 (design notes). That mean rules
# out "nearly all at 800": with photographic aspect ratios it needs many smaller long sides and a
# minority of portraits. So: the longer side is max_side for AVA_AT_MAX of the images, uniform
# integers in [AVA_LOWEST x max_side, max_side] otherwise; the long/short ratio is one of
# AVA_ASPECTS (a panorama: uniform in AVA_PANORAMA); AVA_UNCROPPED of the others keep that ratio exactly
# (a camera's frame resized, not cropped), the rest are multiplied by exp(N(0, AVA_ASPECT_JITTER)) as
# free crops give; landscape with probability AVA_LANDSCAPE. The exact ratios make sizes repeat as
# AVA's do (800x600, 800x533, 800x800, 600x800, 533x800 most often, and the camera ratios at smaller
# long sides); AVA_UNCROPPED is set from the one count at hand, AVA's ~25,000 distinct sizes among its
# 255,530 images: 255,530 draws with max_side 800 give about 25,500 (0.8 would give 35,000, 0.5 57,000).
# Their mean is about 632 x 504.
AVA_AT_MAX = 0.40
AVA_LOWEST = 0.45
AVA_ASPECTS = {"4:3": (4 / 3, 0.45), "3:2": (3 / 2, 0.30), "16:9": (16 / 9, 0.10), "1:1": (1.0, 0.08), "panorama": (None, 0.07)}
AVA_PANORAMA = (2.2, 3.2)
AVA_ASPECT_JITTER = 0.03
AVA_UNCROPPED = 0.9
AVA_LANDSCAPE = 0.82
# Usable oddities (decode to RGB): share of the images, at least one each. AVA's true shares are unknown
# here; these make every kind appear in a set of a few dozen images.
ODDITIES = {"greyscale": 0.05, "cmyk": 0.01, "progressive": 0.05, "png": 0.01}
# Unusable files planted with problem_cases (ids outside the 100000 + index range of ordinary images).
MISSING_ID, MALFORMED_ID, TRUNCATED_ID, ABSENT_TEST_ID, TINY_ID = "999001", "999002", "999003", "999004", "999005"
TINY_SIZE = (80, 60)  # the Inceptions need 86 px on the shorter side (design notes); AVA has a few such
# A file that notebook 00 accepts and extraction cannot use: a black-and-white stitched panorama at its
# full resolution, as an AVA-format folder rebuilt from re-downloaded originals (not the site's
# 800-px copies) can hold. 120 MP is under mlsp.images.MAX_PIXELS (by default 250 MP): its header passes;
# notebook 00 verifies JPEGs at a reduced scale (draft mode, 1/8 here), which decodes in ~20 MB;
# extraction needs the full size, 30000 x 4000 x 11 bytes (mode L: its storage and the RGB
# conversion, mlsp.images.decode_bytes) = 1.32e9 bytes, over MAX_DECODE_BYTES' default 1 GiB, so
# load_rgb refuses it before decoding and every pass lists it as skipped.
PANORAMA_ID = "999006"
PANORAMA_SIZE = (30000, 4000)
PANORAMA_BLOCK = 8  # JPEG's block: flat 8x8 blocks hold only a DC coefficient, so the file stays ~2 MB

AVA_DATA_CARD = """# Embedded AVA-format data set (synthetic, AVA-shaped)

What this is: {n} images in AVA's layout (`images/<id>.jpg`, `AVA.txt`, `generic_test.jpgl`),
made by `mlsp.embedded.generate(seed={seed}, shape="ava", min_side={min_side}, max_side={max_side},
problem_cases={problem_cases})`.

- **Photos**: real photographs shipped inside pip wheels (scikit-image `skimage.data`: {skimage};
  scikit-learn `load_sample_images`: china, flower), randomly cropped and resized (often enlarged) to
  sizes drawn from an approximation of AVA's size distribution (no AVA here to measure it):
  the longer side is {max_side} px for {at_max:.0%} of the images and uniform in [{lowest}, {max_side}] px
  for the rest; long/short aspect ratio {aspects}; {uncropped:.0%} of the non-panoramas keep the ratio
  exactly (a camera's frame resized, so sizes repeat as AVA's do), the rest are jittered by about {jitter:.0%};
  {landscape:.0%} landscape, the rest portrait. AVA's mean is about 629 x 497 (largest 800 x 800).
  This set: mean {mean_width:.0f} x {mean_height:.0f}, {distinct} distinct sizes among {n} images
  (repeated: {repeated}), longest side {longest} px.
- **Degradations**: synthetic, of several kinds and graded strengths: {degradations}, and a fine
  single-pixel grain that a 256x256 rescale partly hides.
- **Votes**: simulated, NOT human ratings. A latent quality score is a fixed function of the
  degradations, of a random appeal of each source photo and, a little, of resolution; each image's
  10-bin vote histogram comes from about {voters} simulated voters drawn around that score.
- **Split**: {n_test} of the {n} images in the test list, and the planted ids marked * below;
  the reader splits the rest 95% / 5%.

## Planted oddities

Usable: these decode to RGB and must be read, not reported (ids; test-list members marked *):
{usable}

Unusable: notebook 00 must report these{unusable_note}
{unusable}

Accepted by notebook 00, unusable in extraction: notebook 01 must skip it in every pass and list it
in `extraction_skipped.csv` (and the tables leave it out){extraction_note}
{extraction}

Use it to rehearse the pipeline on AVA-like files. Numbers measured on it say nothing about AVA or the paper.
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


def ava_sizes(n_images: int, seed: int, min_side: int = 320, max_side: int = 800) -> np.ndarray:
    """(width, height) in pixels of n AVA-shaped images: int64 [n_images, 2] (see AVA_AT_MAX above).

    The longer side lies in [max(min_side, round(AVA_LOWEST x max_side)), max_side], max_side for about
    AVA_AT_MAX of them; the shorter side is at least 1. Deterministic for a seed, and drawn from a
    stream of its own, so the sizes do not depend on what else is drawn. Raises ValueError unless
    1 <= min_side <= max_side.
    AVA_UNCROPPED of the non-panoramas keep their aspect ratio exactly, so sizes repeat (800x533, ...).
    """
    if not 1 <= min_side <= max_side:
        raise ValueError(f"need 1 <= min_side <= max_side, got min_side={min_side}, max_side={max_side}")
    rng = np.random.default_rng([seed, 1])
    lowest = max(min_side, int(round(AVA_LOWEST * max_side)))
    at_max = rng.random(n_images) < AVA_AT_MAX
    long_side = np.where(at_max, max_side, rng.integers(lowest, max_side + 1, size=n_images))
    ratios, shares = zip(*AVA_ASPECTS.values())
    kinds = rng.choice(len(shares), size=n_images, p=shares)
    panorama = rng.uniform(*AVA_PANORAMA, size=n_images)
    ratio = np.array([np.nan if value is None else value for value in ratios])[kinds]
    jitter = np.exp(rng.normal(0.0, AVA_ASPECT_JITTER, size=n_images))
    landscape = rng.random(n_images) < AVA_LANDSCAPE
    uncropped = (rng.random(n_images) < AVA_UNCROPPED) & ~np.isnan(ratio)  # drawn last: the draws above keep their values
    aspect = np.where(np.isnan(ratio), panorama, ratio) * np.where(uncropped, 1.0, jitter)
    short_side = np.maximum(1, np.minimum(long_side, np.round(long_side / np.maximum(aspect, 1.0)))).astype(np.int64)
    return np.stack([np.where(landscape, long_side, short_side), np.where(landscape, short_side, long_side)], axis=1).astype(np.int64)


def repeated_ava_sizes(n_images: int, images_per_size: int, seed: int, min_side: int = 320, max_side: int = 800) -> np.ndarray:
    """(width, height) in pixels of n AVA-shaped images sharing few sizes: int64 [n_images, 2].

    ceil(n_images / images_per_size) sizes drawn by `ava_sizes`, each given to images_per_size images
    (the last to what is left), in a shuffled order. AVA repeats its sizes (about 10 images per size:
    255,530 images, ~25,000 distinct sizes by the authors' estimate), which a small set drawn by
    ava_sizes alone hardly does; batching full-resolution images of equal size needs the repeats.
    Deterministic for a seed. Raises ValueError unless n_images >= 1 and images_per_size >= 1, and see ava_sizes.
    """
    if n_images < 1 or images_per_size < 1:
        raise ValueError(f"need n_images >= 1 and images_per_size >= 1, got {n_images} and {images_per_size}")
    distinct = ava_sizes(-(-n_images // images_per_size), seed, min_side, max_side)
    order = np.random.default_rng([seed, 3]).permutation(n_images)
    return distinct[np.arange(n_images) // images_per_size][order]


def oddity_plan(n_images: int, seed: int) -> dict[int, str]:
    """{image index: oddity} for the usable oddities of an AVA-shaped set (ODDITIES: share, at least 1 each).

    Index 0 is never chosen: problem_cases truncates a copy of image 0, which must stay a baseline JPEG.
    Deterministic for a seed (a stream of its own). Raises ValueError when n_images leaves too few
    images for every kind.
    """
    counts = {kind: max(1, int(round(share * n_images))) for kind, share in ODDITIES.items()}
    if sum(counts.values()) > n_images - 1:
        raise ValueError(f"shape='ava' needs at least {sum(counts.values()) + 1} images (one of each oddity and a plain one), got {n_images}")
    chosen = 1 + np.random.default_rng([seed, 2]).permutation(n_images - 1)
    plan, start = {}, 0
    for kind, count in counts.items():
        plan.update({int(index): kind for index in chosen[start : start + count]})
        start += count
    return plan


def ava_test_members(n_images: int, seed: int, test_fraction: float) -> set[int]:
    """Indices of the ordinary images in an AVA-shaped set's test list: round(test_fraction x n_images)
    of them (clipped to [0, n_images]), drawn from a stream of their own. The main stream's draws
    depend on the image sizes (noise of each image's size), so a split drawn there would move whenever
    the size distribution does; a small rehearsal needs its few test images to stay."""
    count = min(n_images, max(0, int(round(test_fraction * n_images))))
    return {int(index) for index in np.random.default_rng([seed, 3]).choice(n_images, size=count, replace=False)}


def _crop_to_size(rng, photo: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A random crop of `photo` with the aspect ratio of size (width, height), resized to exactly that size."""
    width, height = size
    aspect = width / height
    photo_height, photo_width = photo.shape[:2]
    area = rng.uniform(0.35, 1.0) * photo_height * photo_width
    crop_width = min(photo_width, min(photo_height, np.sqrt(area / aspect)) * aspect)
    crop_height = max(1, int(crop_width / aspect))  # from the width, so the aspect survives when the width binds
    crop_width = max(1, int(crop_width))
    top = int(rng.integers(0, photo_height - crop_height + 1))
    left = int(rng.integers(0, photo_width - crop_width + 1))
    crop = Image.fromarray(photo[top : top + crop_height, left : left + crop_width])
    return crop.resize((int(width), int(height)), Image.LANCZOS)


def full_resolution_panorama(rng, photo: np.ndarray) -> bytes:
    """PANORAMA_SIZE greyscale JPEG bytes (about 2 MB): a strip of `photo` at 1/PANORAMA_BLOCK of that
    size, each pixel enlarged to one flat 8x8 JPEG block. Decoded at 1/8 scale (draft mode, as notebook
    00 verifies it) it is the strip; decoded at full size it needs mlsp.images.decode_bytes' 1.32e9 bytes.
    Costs about 120 MB of memory and a second while written."""
    width, height = PANORAMA_SIZE
    strip = _crop_to_size(rng, photo, (width // PANORAMA_BLOCK, height // PANORAMA_BLOCK)).convert("L")
    buffer = io.BytesIO()
    strip.resize(PANORAMA_SIZE, Image.NEAREST).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def _encode(image: Image.Image, quality: int, oddity: str | None = None) -> bytes:
    """The file's bytes: a baseline RGB JPEG, or the oddity (see ODDITIES) with the same pixels."""
    buffer = io.BytesIO()
    if oddity is None:
        image.save(buffer, format="JPEG", quality=quality)
    elif oddity == "greyscale":
        image.convert("L").save(buffer, format="JPEG", quality=quality)
    elif oddity == "cmyk":
        image.convert("CMYK").save(buffer, format="JPEG", quality=quality)
    elif oddity == "progressive":
        image.save(buffer, format="JPEG", quality=quality, progressive=True)
    elif oddity == "png":
        image.save(buffer, format="PNG")
    else:
        raise ValueError(f"unknown oddity {oddity!r}; known: {', '.join(ODDITIES)}")
    return buffer.getvalue()


def generate(
    output_dir, n_images: int, seed: int, min_side: int = 320, max_side: int = 800, test_fraction: float = 0.25,
    problem_cases: bool = True, shape: str = "uniform", sizes=None,
) -> Path:
    """Write the set in AVA's layout; returns the folder. Same seed and packages -> same bytes.

    n_images: ordinary images, ids 100000 + index; about test_fraction of them are in the test list
        (shape "ava": exactly round(test_fraction x n_images), see ava_test_members).
    shape "uniform": the longer side uniform in [min_side, max_side] px, baseline RGB JPEGs (the demo
        and smoke sets; unchanged since they were first published).
    shape "ava": sizes from `ava_sizes` (AVA's shape with the defaults 320 and 800), and the usable
        oddities of `oddity_plan`; needs n_images >= 5.
    problem_cases: plant an AVA.txt row without image file (999001), a malformed row (999002), a
        truncated JPEG (999003), a second row for id 100001 and a listed test id absent from AVA.txt
        (999004); with shape "ava" also an 80x60 image (999005) and a 30000x4000 panorama that notebook
        00 accepts and extraction skips (999006, see PANORAMA_SIZE), and 999001, 999005 and 999006 in
        the test list.
    sizes: shape "ava" only: (width, height) in pixels per image, [n_images, 2], instead of
        ava_sizes' draws (e.g. repeated_ava_sizes: AVA's repeated sizes in a small set).
    DATA_CARD.md says what was planted. Raises ValueError for an unknown shape, for sizes given
    with shape "uniform" or not of shape [n_images, 2] with sides >= 1, and see ava_sizes and oddity_plan.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    ava = shape == "ava"
    if sizes is not None:
        sizes = np.asarray(sizes, dtype=np.int64)
        if not ava or sizes.shape != (n_images, 2) or sizes.min(initial=1) < 1:
            raise ValueError(f"sizes must be (width, height) >= 1 for each of the {n_images} images of shape 'ava', got shape {shape!r} and an array of shape {sizes.shape}")
    elif ava:
        sizes = ava_sizes(n_images, seed, min_side, max_side)
    plan = oddity_plan(n_images, seed) if ava else {}
    test_members = ava_test_members(n_images, seed, test_fraction) if ava else set()
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
        if ava:
            image = _crop_to_size(rng, photos[source], tuple(sizes[index]))
        else:
            image = _crop_and_resize(rng, photos[source], min_side, max_side)
        image, strengths, quality = _degrade(rng, image)
        megapixels = image.size[0] * image.size[1] / 1e6
        latent = 8.2 + appeal[source] + 0.6 * megapixels - sum(PENALTIES[name] * value for name, value in strengths.items())
        latent = float(np.clip(latent + rng.normal(0, 0.35), 1.5, 9.0))
        voters = int(rng.poisson(VOTERS))
        votes = np.clip(np.round(rng.normal(latent, VOTE_SPREAD, size=voters)), 1, 10).astype(int)
        counts = np.bincount(votes, minlength=11)[1:]
        (images_dir / f"{image_id}.jpg").write_bytes(_encode(image, quality, plan.get(index)))
        rows.append(f"{index + 1} {image_id} " + " ".join(str(c) for c in counts) + f" 0 0 {int(rng.integers(1, 1500))}")
        if (index in test_members) if ava else rng.random() < test_fraction:
            test_ids.append(image_id)
    listed = list(test_ids)
    if problem_cases:
        # the kinds of trouble real AVA has, so the reader's reports show up in every run
        rows.append(f"{n_images + 1} {MISSING_ID} " + " ".join(["20"] * 10) + " 0 0 1")  # no image file
        rows.append(f"{n_images + 2} {MALFORMED_ID} 3 4 5")  # malformed row
        good = (images_dir / "100000.jpg").read_bytes()
        (images_dir / f"{TRUNCATED_ID}.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
        rows.append(f"{n_images + 3} {TRUNCATED_ID} " + " ".join(["20"] * 10) + " 0 0 1")
        rows.append(f"{n_images + 4} 100001 " + " ".join(["1"] * 10) + " 0 0 1")  # duplicate id
        if ava:
            tiny = _crop_to_size(rng, photos[names[int(rng.integers(len(names)))]], TINY_SIZE)
            (images_dir / f"{TINY_ID}.jpg").write_bytes(_encode(tiny, 92))
            rows.append(f"{n_images + 5} {TINY_ID} " + " ".join(["20"] * 10) + " 0 0 1")
            panorama = images_dir / f"{PANORAMA_ID}.jpg"
            panorama.write_bytes(full_resolution_panorama(rng, photos[names[int(rng.integers(len(names)))]]))
            with Image.open(panorama) as opened:  # the header only: nothing is decoded
                panorama_need = images.decode_bytes(opened)
            rows.append(f"{n_images + 6} {PANORAMA_ID} " + " ".join(["20"] * 10) + " 0 0 1")
            # a test image without file and one too small (00 counts both), and one that only extraction
            # skips (in the test list, so the split's validation draw among trainable rows is unchanged)
            listed += [MISSING_ID, TINY_ID, PANORAMA_ID]
        listed.append(ABSENT_TEST_ID)  # a listed test id that AVA.txt lacks
    (output_dir / "AVA.txt").write_text("\n".join(rows) + "\n")
    (output_dir / "generic_test.jpgl").write_text("\n".join(listed) + "\n")
    skimage_names = ", ".join(SKIMAGE_PHOTOS + ("stereo_motorcycle",))
    if ava:
        card = _ava_card(
            n_images, seed, min_side, max_side, problem_cases, sizes, plan, set(listed), len(test_ids), skimage_names,
            panorama_need if problem_cases else None,
        )
    else:
        card = DATA_CARD.format(
            n=n_images, seed=seed, skimage=skimage_names, min_side=min_side,
            max_side=max_side, degradations=", ".join(DEGRADATIONS), voters=VOTERS, n_test=len(test_ids),
        )
    (output_dir / "DATA_CARD.md").write_text(card)
    write_manifest(output_dir)
    return output_dir


ODDITY_NAMES = {"greyscale": "greyscale JPEG (mode L)", "cmyk": "CMYK JPEG", "progressive": "progressive JPEG", "png": "PNG saved under a .jpg name"}


def _against_limits(pixels: int, needed: int) -> str:
    """What notebooks 00 and 01 do with a JPEG of `pixels` whose full decoding takes `needed` bytes,
    under the limits in force (mlsp.images: MAX_PIXELS, MAX_DECODE_BYTES; both set from the environment)."""
    if pixels > images.MAX_PIXELS:
        return (f"NOT under the header limit of {images.MAX_PIXELS / 1e6:g} MP in force ({images.PIXEL_LIMIT_ENV} lowered it): "
                "notebook 00 reports it as unreadable instead")
    limit = f"the decoding limit of {images.MAX_DECODE_BYTES / 2**30:g} GiB in force ({images.DECODE_LIMIT_ENV})"
    if needed > images.MAX_DECODE_BYTES:
        return f"under the header limit of {images.MAX_PIXELS / 1e6:g} MP, over {limit}: load_rgb refuses it before decoding"
    return f"NOT over {limit}, which was raised: extraction will decode it, and nothing is skipped"


def _ava_card(n_images, seed, min_side, max_side, problem_cases, sizes, plan, listed, n_test, skimage_names, panorama_need=None) -> str:
    """DATA_CARD.md of an AVA-shaped set: the size distribution, this set's sizes, every planted oddity.
    panorama_need: bytes that decoding the planted panorama takes (with problem_cases)."""
    def ids(image_ids):
        return ", ".join(f"{image_id}*" if image_id in listed else image_id for image_id in image_ids)

    usable = []
    for kind in ODDITIES:
        members = [str(100000 + index) for index, oddity in sorted(plan.items()) if oddity == kind]
        usable.append(f"- {ODDITY_NAMES[kind]}: {len(members)} ({ids(members)})")
    extraction, extraction_note = "- none (problem_cases=False)", "; none planted in this set."
    if problem_cases:
        extraction = (
            f"- full-resolution panorama: 1 ({ids([PANORAMA_ID])}): a {PANORAMA_SIZE[0]}x{PANORAMA_SIZE[1]} greyscale JPEG "
            f"({PANORAMA_SIZE[0] * PANORAMA_SIZE[1] / 1e6:.0f} MP), a stitched panorama as uploaded, as a "
            "folder rebuilt from re-downloaded originals can hold (AVA's own copies are at most 800 px). Notebook 00 verifies "
            f"JPEGs at a reduced scale and accepts it; extraction decodes at full size, about {panorama_need / 2**30:.2f} GiB "
            f"(mlsp.images.decode_bytes): {_against_limits(PANORAMA_SIZE[0] * PANORAMA_SIZE[1], panorama_need)}"
        )
        extraction_note = ":"
        unusable = "\n".join([
            f"- file missing: 1 ({ids([MISSING_ID])}): a row in AVA.txt, no image file",
            f"- truncated JPEG: 1 ({ids([TRUNCATED_ID])}): the first half of 100000.jpg's bytes",
            f"- too small for the Inceptions: 1 ({ids([TINY_ID])}): {TINY_SIZE[0]}x{TINY_SIZE[1]} px; they need 86 px on the "
            "shorter side, so `read_ava(min_side=86)` reports it (the kit-wide default of 32 px takes it)",
            f"- not images but lines: a malformed AVA.txt row ({MALFORMED_ID}), a second row for id 100001 (the first is "
            f"kept), a test-list id that AVA.txt lacks ({ids([ABSENT_TEST_ID])})",
        ])
        unusable_note = ":"
    else:
        unusable, unusable_note = "- none (problem_cases=False)", "; none planted in this set."
    aspects = ", ".join(
        f"{name} ({share:.0%})" if ratio else f"a panorama {AVA_PANORAMA[0]}-{AVA_PANORAMA[1]} ({share:.0%})"
        for name, (ratio, share) in AVA_ASPECTS.items()
    )
    return AVA_DATA_CARD.format(
        n=n_images, seed=seed, min_side=min_side, max_side=max_side, problem_cases=problem_cases, skimage=skimage_names,
        at_max=AVA_AT_MAX, lowest=max(min_side, int(round(AVA_LOWEST * max_side))), aspects=aspects, jitter=AVA_ASPECT_JITTER,
        landscape=AVA_LANDSCAPE, mean_width=sizes[:, 0].mean(), mean_height=sizes[:, 1].mean(),
        distinct=len({tuple(size) for size in sizes.tolist()}), repeated=_repeated_sizes(sizes), longest=int(sizes.max()),
        uncropped=AVA_UNCROPPED, extraction=extraction, extraction_note=extraction_note,
        degradations=", ".join(DEGRADATIONS), voters=VOTERS, n_test=n_test, usable="\n".join(usable),
        unusable_note=unusable_note, unusable=unusable,
    )


def _repeated_sizes(sizes: np.ndarray) -> str:
    """"800x600 (3), 800x533 (2)": each size [n, 2] (width, height) held by several images, most first; "none"."""
    values, counts = np.unique(sizes, axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    repeated = [f"{values[i][0]}x{values[i][1]} ({counts[i]})" for i in order if counts[i] > 1]
    return ", ".join(repeated) or "none"


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
