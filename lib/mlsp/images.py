"""Decoding images for the whole kit: any file Pillow reads -> 8-bit RGB, or a clear per-file error.

Conventions (one place, so AVA, fine-tuning, reports and `mlsp score` see the same pixels):
  - every mode is scaled to 8 bits, never clipped: 16-bit data maps 0..65535 -> 0..255 by
    round(v / 257). Pillow itself reduces 16-bit RGB(A) and grey+alpha PNG/TIFF to 8 bits by keeping
    the high byte (floor(v / 256)), which differs from round(v / 257) by at most 1 level; 16-bit grey
    reaches us as 16 bits and is scaled exactly.
  - mode "I" (32-bit integer: signed 16-bit TIFF, some PGM readers) is taken as 16-bit data and
    clipped to 0..65535 first; mode "F" (32-bit float) is taken as intensities in [0, 1] when all its
    values lie there (scaled by 255), otherwise as 0..255 values (clipped).
  - every form of transparency (alpha channel, premultiplied alpha, palette transparency by index or
    per entry, tRNS colour keys) is composited on white, as a viewer shows it on a white page.
  - animations and multi-page files: the first frame.
  - EXIF orientation is applied only when asked: AVA's raters saw the stored pixels, a user's phone
    photo is meant to be seen upright. (Pillow applies a TIFF's orientation tag while decoding, so
    TIFFs come upright either way; `read_size` reports their decoded size.)
  - colour profiles (ICC) are not applied: pixels are taken as sRGB, as in the authors' code.

Pillow's decompression-bomb guard warns or raises from inside `Image.open`, and turning its warning
into an error needs `warnings.catch_warnings`, which is not thread-safe (decoding runs in worker
threads). So this module switches Pillow's guard off (`Image.MAX_IMAGE_PIXELS = None`) and checks the
header size against `MAX_PIXELS` itself, before any pixel is decoded.

Pixels alone do not bound memory: a 0.6 MB PNG of 16000x12000 flat colour passes MAX_PIXELS yet
needs 2 GB to decode and convert, a float TIFF of the same size four times that. So `load_rgb` also
estimates the peak memory of decoding and converting the file (`decode_bytes`, from the size and mode
after JPEG draft mode) and refuses one over `MAX_DECODE_BYTES`, again before any pixel is decoded.
"""
from __future__ import annotations

import math
import numbers
import os
import stat
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

# Both limits are raised from outside by a user with a genuine larger file and the memory for it, for
# the notebooks and `mlsp score` alike: MLSP_MAX_PIXELS=400000000, MLSP_MAX_DECODE_GIB=4.
PIXEL_LIMIT_ENV = "MLSP_MAX_PIXELS"
DECODE_LIMIT_ENV = "MLSP_MAX_DECODE_GIB"


def positive_from_environment(name: str, default: float, meaning: str, environment=os.environ) -> float:
    """The environment variable `name` as a positive finite number, or `default` when it is unset or
    blank. Raises ValueError naming the variable and what it means for any other value."""
    text = environment.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}={text!r}: must be a positive number of {meaning}")
    return value


def pixel_limit_from_environment(environment=os.environ) -> int:
    """MAX_PIXELS: MLSP_MAX_PIXELS when set, else 250 million. Above the largest camera sensors (200 MP
    phones, 150 MP medium format) and far below a bomb (a 30000x30000 PNG of zeros is a few kB). A full
    decode at the limit is ~750 MB of 8-bit RGB; with `max_side`, JPEGs are decoded at a fraction of that
    (draft mode). Raises ValueError naming the variable for a value that is not a positive number."""
    return int(positive_from_environment(PIXEL_LIMIT_ENV, 250_000_000, "pixels (the largest width x height an image may have), e.g. 400000000", environment))


def decode_limit_from_environment(environment=os.environ) -> int:
    """MAX_DECODE_BYTES in bytes: MLSP_MAX_DECODE_GIB (GiB, a positive number) when set, else 1 GiB.
    Peak memory of one decode: measure_images decodes in 8 threads, so a whole data set peaks near 8 GiB
    at worst, within an ordinary 16 GB machine. 1 GiB holds the largest camera frames as stored: a 102 MP
    RGB file (Fujifilm GFX100) at full size is ~1.0 GB (10 bytes a pixel, below), a 50 MP one half of
    that; with `max_side` a JPEG is decoded at a fraction of its size (draft mode).
    Raises ValueError naming the variable for a value that is not a positive finite number."""
    return int(positive_from_environment(DECODE_LIMIT_ENV, 1.0, "GiB (the largest memory one image may take to decode), e.g. 4", environment) * 2**30)


MAX_PIXELS = pixel_limit_from_environment()
MAX_DECODE_BYTES = decode_limit_from_environment()
WHITE = (255, 255, 255)
ORIENTATION_TAG = ExifTags.Base.Orientation
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # transpose, rotate 90/270, transverse: width and height swap
DRAFT_GAP = 2  # JPEG draft decodes at >= 2x the target size, then a Lanczos filter finishes (as Image.thumbnail)

Image.MAX_IMAGE_PIXELS = None  # replaced by `check_pixels` (see the module docstring)
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey band


class ImageError(ValueError):
    """An image file that cannot be used; the message starts with the file path, then the reason.

    `ImageError(path, reason)`; `.path` and `.reason` hold the parts. `ImageError(message)` (one
    argument) is accepted too, with `.path` None and `.reason` the whole message.
    """

    def __init__(self, path, reason: str | None = None):
        if reason is None:
            path, reason = None, str(path)
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(reason if path is None else f"{path}: {reason}")


def check_pixels(path, size: tuple[int, int]) -> None:
    """Raise ImageError when a header's (width, height) exceeds MAX_PIXELS (decompression-bomb guard)."""
    pixels = int(size[0]) * int(size[1])
    if pixels > MAX_PIXELS:
        raise ImageError(
            path,
            f"{pixels} pixels exceeds the limit of {MAX_PIXELS} (decompression-bomb guard; the header says "
            f"{size[0]}x{size[1]}; if the file is genuine, raise the limit with the environment variable "
            f"{PIXEL_LIMIT_ENV}, e.g. {PIXEL_LIMIT_ENV}={pixels})",
        )


# Bytes a pixel takes in Pillow's own storage: every 3- and 4-channel mode (and LA, PA) takes 4.
_STORAGE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
# What rgb_array makes of a pixel on top of the decoded image, at its peak, in bytes; peaks measured
# with getrusage (192-250 MP PNGs and TIFFs) lie within 15% of these sums (RGB 11.2 bytes, I;16 20.1). np.array(image) goes through a bytes copy: 3 + 3 for the RGB
# result; a convert("RGB") first adds Pillow's 4; compositing on white holds an RGBA copy, the white
# page and the result (4 each) before the RGB convert; 16-bit grey goes through int64 (8 + 8), float
# through float64 copies (8 each), premultiplied alpha through int16.
_CONVERSION_BYTES = {"RGB": 6, "I;16": 18, "I;16L": 18, "I;16B": 18, "I;16N": 18, "I": 20, "F": 32, "La": 24, "RGBa": 24}
_CONVERT_BYTES = 10  # convert("RGB"), then np.array's two copies: "1", L, P, RGBX, CMYK, YCbCr, LAB, HSV
_COMPOSITE_BYTES = 14  # on white: its RGBA copy, the RGB convert, np.array's two copies (page and result are gone by then)


def _transparent(image: Image.Image) -> bool:
    """Whether rgb_array composites this image on white (its alpha, palette or tRNS transparency)."""
    mode = image.mode
    return mode in ("RGBA", "LA", "PA") or (mode == "P" and image.palette is not None and image.palette.mode == "RGBA") or (
        mode in ("1", "L", "P", "RGB") and image.info.get("transparency") is not None
    )


def decode_bytes(image: Image.Image, transposed: bool = False) -> int:
    """Estimated peak memory in bytes of `load_rgb` decoding an opened (not yet loaded) image at its
    current size (after draft mode) and mode, and converting it to RGB; `transposed`: an EXIF
    rotation's copy too."""
    storage = _STORAGE_BYTES.get(image.mode, 4)
    extra = _COMPOSITE_BYTES if _transparent(image) else _CONVERSION_BYTES.get(image.mode, _CONVERT_BYTES)
    per_pixel = storage * (2 if transposed else 1) + extra
    return int(image.size[0]) * int(image.size[1]) * per_pixel


def check_decode_bytes(path, image: Image.Image, stored_size: tuple[int, int] | None = None, transposed: bool = False) -> None:
    """Raise ImageError naming the file, its size, mode and the estimate when decoding it would take
    more than MAX_DECODE_BYTES (decode_bytes). stored_size: the header's size, when draft mode
    reduced the size that will be decoded."""
    needed = decode_bytes(image, transposed)
    if needed <= MAX_DECODE_BYTES:
        return
    width, height = image.size
    size = f"{width}x{height} pixels"
    if stored_size is not None and tuple(stored_size) != (width, height):
        size = f"{stored_size[0]}x{stored_size[1]} pixels, decoded at {width}x{height}"
    raise ImageError(
        path,
        f"decoding it would take about {needed / 2**30:.1f} GiB of memory ({size}, mode {image.mode}, "
        f"{needed // (width * height)} bytes a pixel to decode and convert to RGB), over the limit of "
        f"{MAX_DECODE_BYTES / 2**30:g} GiB (decompression-bomb guard; if the file is genuine and the memory is there, "
        f"raise the limit with the environment variable {DECODE_LIMIT_ENV}, e.g. {DECODE_LIMIT_ENV}={max(2, -(-needed // 2**30))})",
    )


def _reason(error: Exception) -> str:
    """A short reason for a failure inside Pillow (whose messages sometimes repeat the path)."""
    if isinstance(error, FileNotFoundError):
        return "file not found"
    if isinstance(error, NotADirectoryError):
        return "file not found (a part of its path is a file, not a folder)"
    if isinstance(error, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, UnidentifiedImageError):
        return "not an image file (Pillow cannot identify its format)"
    if isinstance(error, Image.DecompressionBombError):  # only if someone re-enabled Pillow's guard
        return f"too many pixels (decompression-bomb guard: {error})"
    return f"cannot decode ({type(error).__name__}: {error})"


# What a path that is not a regular file is, by the file-type bits of its (followed) stat.
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_regular(path) -> str | None:
    """Why `path` cannot be read as a file, e.g. "a named pipe (FIFO), not a regular file"; None
    for a regular file. Symbolic links are followed (the reason then names the target).

    Raises OSError from os.stat: FileNotFoundError (missing, or a broken link), PermissionError.
    """
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
    if os.path.islink(path):
        kind += f" (through a symbolic link to {os.path.realpath(path)})"
    return f"{kind}, not a regular file"


def _open(path: Path) -> Image.Image:
    """Image.open with every failure as ImageError, and the pixel count checked against MAX_PIXELS."""
    try:
        # Checked before opening: open() waits forever on a FIFO with no writer, and a device such
        # as /dev/zero or /dev/urandom never ends; a directory named like an image is caught here too.
        reason = not_regular(path)
        if reason is not None:
            raise ImageError(path, reason)
        if path.stat().st_size == 0:
            raise ImageError(path, "empty file (0 bytes)")
        image = Image.open(path)
    except ImageError:
        raise
    except Exception as error:  # Pillow raises many types for broken headers
        raise ImageError(path, _reason(error)) from error
    try:
        check_pixels(path, image.size)
    except ImageError:
        image.close()
        raise
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation 1..8 still to apply to the decoded pixels; 1 when none or invalid."""
    if image.format == "TIFF":
        return 1  # Pillow's TIFF reader applies the tag itself (size at open is already upright)
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a corrupt EXIF block: the pixels are fine, shown as stored (as viewers do)
        return 1
    return orientation if orientation in range(1, 9) else 1


def read_size(path, apply_exif_orientation: bool = False) -> tuple[int, int]:
    """(width, height) in pixels from the file's header, as `load_rgb` would return them.

    With `apply_exif_orientation`, orientations 5-8 swap width and height. Nothing is decoded (except
    for a PNG whose EXIF chunk follows the pixel data, which Pillow finds only by decoding).
    Raises ImageError (missing, not a regular file, empty, unreadable or too many pixels).
    """
    path = Path(path)
    image = _open(path)
    try:
        with image:
            width, height = image.size
            if apply_exif_orientation and _orientation(image) in SWAPPING_ORIENTATIONS:
                width, height = height, width
    except ImageError:
        raise
    except Exception as error:
        raise ImageError(path, _reason(error)) from error
    return width, height


def target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(width, height) with the longer side == max_side and the aspect ratio kept (each side >= 1)."""
    width, height = size
    scale = max_side / max(width, height)
    if width >= height:
        return max_side, max(1, round(height * scale))
    return max(1, round(width * scale)), max_side


def load_rgb(path, apply_exif_orientation: bool = False, max_side: int | None = None) -> np.ndarray:
    """Decode an image file to RGB: uint8 [H, W, 3] (writable), whatever its mode and format.

    apply_exif_orientation: rotate/flip as the EXIF (or XMP) Orientation tag says (what viewers show);
        False gives the stored pixels (AVA, and the authors' code).
    max_side: when given and the image's longer side exceeds it, downscale (Lanczos) keeping the aspect
        ratio so that the longer side == max_side; JPEGs are first decoded at a reduced scale
        (Pillow's draft mode), so a 24-megapixel photo is never decoded at full size.
    Raises ImageError for every failure: missing or empty file, not a regular file (a FIFO, a device,
    a socket, a directory; checked before opening, so nothing blocks), not an image, truncated or corrupt
    data, more than MAX_PIXELS pixels, an estimated decoding peak over MAX_DECODE_BYTES (checked before
    decoding), an unsupported mode. ValueError for max_side < 1.
    """
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, numbers.Integral) or max_side < 1):
        raise ValueError(f"max_side must be a positive integer or None, got {max_side!r}")
    path = Path(path)
    image = _open(path)
    try:
        with image:
            stored_size, swapped = image.size, False
            wanted = target_size(stored_size, max_side) if max_side is not None and max(stored_size) > max_side else None
            if wanted is not None:
                image.draft(None, (wanted[0] * DRAFT_GAP, wanted[1] * DRAFT_GAP))  # no-op but for JPEG
            # an EXIF rotation copies the decoded image; a PNG's orientation is known only after
            # decoding (its EXIF chunk may follow the pixels), so it is counted whenever asked for
            transposed = apply_exif_orientation and image.format != "TIFF" and (image.format != "JPEG" or _orientation(image) != 1)
            check_decode_bytes(path, image, stored_size, transposed)  # after draft: the size that will be decoded
            image.load()
            orientation = _orientation(image) if apply_exif_orientation else 1
            if orientation != 1:  # the EXIF block parsed (and is cached), so this cannot fail on it
                image = ImageOps.exif_transpose(image)
                swapped = orientation in SWAPPING_ORIENTATIONS
            rgb = rgb_array(image)
    except ImageError:
        raise
    except Exception as error:  # Pillow raises OSError, SyntaxError, struct.error, ... for bad data
        raise ImageError(path, _reason(error)) from error
    if wanted is not None:  # from the stored size: a draft's rounding must not change the aspect ratio
        size = wanted[::-1] if swapped else wanted
        if (rgb.shape[1], rgb.shape[0]) != size:
            rgb = np.array(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    return rgb


def rgb_array(image: Image.Image) -> np.ndarray:
    """A decoded PIL image of any mode -> RGB uint8 [H, W, 3], with the module's conventions.

    Raises ValueError for a mode it does not know and for a float image holding NaN.
    """
    mode = image.mode
    transparency = image.info.get("transparency")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        grey = _high_precision_grey(image)
        if transparency is not None and mode != "F":  # a tRNS colour key on 16-bit grey
            grey = np.where(np.asarray(image) == transparency, 255, grey).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("La", "RGBa"):  # premultiplied: on white, colour + (1 - alpha) * 255 exactly
        values = np.asarray(image).astype(np.int16)
        colour, alpha = values[..., :-1], values[..., -1:]
        rgb = np.clip(colour + 255 - alpha, 0, 255).astype(np.uint8)
        return np.array(np.broadcast_to(rgb, rgb.shape[:2] + (3,)))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and image.palette is not None and image.palette.mode == "RGBA") or (
        mode in ("1", "L", "P", "RGB") and transparency is not None
    ):
        rgba = image.convert("RGBA")
        return np.array(Image.alpha_composite(Image.new("RGBA", image.size, WHITE + (255,)), rgba).convert("RGB"))
    if mode == "RGB":
        return np.array(image)
    if mode in ("1", "L", "P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.array(image.convert("RGB"))
    raise ValueError(f"unsupported image mode '{mode}'")


def _high_precision_grey(image: Image.Image) -> np.ndarray:
    """16-bit, 32-bit integer or float grey -> uint8 [H, W] (see the module's conventions)."""
    values = np.asarray(image)
    if image.mode == "F":
        values = values.astype(np.float64)
        if np.isnan(values).any():
            raise ValueError("float image holds NaN values")
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1:
            values = values * 255
        return np.round(np.clip(values, 0, 255)).astype(np.uint8)
    values = np.clip(values.astype(np.int64), 0, 65535)
    return ((2 * values + 257) // 514).astype(np.uint8)  # round(v / 257) in integers (no ties occur)
