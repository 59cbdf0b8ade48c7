"""mlsp.images (one decoder for every mode, orientation, size limits) and each backbone's smallest input.

Every image is made here with numpy/PIL (a few PNGs by hand, for what Pillow cannot write).
"""
import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image, JpegImagePlugin

from mlsp import backbones, data, features, images

pytestmark = pytest.mark.filterwarnings("error")  # no decoding path may leak a warning


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: np.ndarray | None, *chunks: tuple[bytes, bytes]) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit colour or a 16-bit tRNS). `rows` are the
    raw big-endian samples [H, W*channels] (filter 0), or None for a small IDAT of zeros."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"\x00" * 64 if rows is None else b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + b"".join(chunk(k, b) for k, b in chunks) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def tiff_with_associated_alpha(image: Image.Image, path):
    """Pillow writes RGBA / LA TIFFs with unassociated alpha (ExtraSamples = 2); a file with
    premultiplied alpha (ExtraSamples = 1, Pillow's RGBa / La) is the same bytes with that tag changed."""
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    content = buffer.getvalue()
    unassociated = struct.pack("<HHIH", 338, 3, 1, 2)
    assert content.count(unassociated) == 1
    path.write_bytes(content.replace(unassociated, struct.pack("<HHIH", 338, 3, 1, 1)))
    return path


def stored_mode(path) -> str:
    with Image.open(path) as image:
        return image.mode


def grey(values, dtype) -> np.ndarray:
    return np.asarray(values, dtype=dtype).reshape(1, -1)


SIXTEEN_BIT = [0, 128, 129, 255, 32896, 65280, 65535]
SIXTEEN_BIT_AS_8 = [0, 0, 1, 1, 128, 254, 255]  # round(v / 257): 128 -> 0, 129 -> 1, 65280 -> 254


def test_sixteen_bit_grey_scales_by_257_and_rounds(tmp_path):
    png = save(Image.fromarray(grey(SIXTEEN_BIT, np.uint16)), tmp_path / "grey16.png")
    assert stored_mode(png) in ("I;16", "I")  # Pillow keeps the 16 bits (mode depends on its version)
    big_endian = save(Image.frombytes("I;16B", (len(SIXTEEN_BIT), 1), grey(SIXTEEN_BIT, ">u2").tobytes()), tmp_path / "grey16b.tif")
    assert stored_mode(big_endian) == "I;16B"
    for path in (png, big_endian):
        rgb = images.load_rgb(path)
        assert rgb.dtype == np.uint8 and rgb.shape == (1, len(SIXTEEN_BIT), 3)
        assert rgb[0, :, 0].tolist() == SIXTEEN_BIT_AS_8, path.name
        assert (rgb == rgb[..., :1]).all()


def test_sixteen_bit_colour_png_is_scaled_not_clipped(tmp_path):
    """Pillow reduces 16-bit RGB / RGBA / grey+alpha PNGs to 8 bits itself (high byte): within 1 of v / 257."""
    values = grey(SIXTEEN_BIT, ">u2")[0]
    expected = np.asarray(SIXTEEN_BIT) / 257
    rgb_rows = np.stack([values, values[::-1], values], axis=-1).astype(">u2").reshape(1, -1)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(len(values), 1, 16, 2, rgb_rows))
    rgb = images.load_rgb(path).astype(float)
    assert np.abs(rgb[0, :, 0] - expected).max() <= 1 and np.abs(rgb[0, :, 1] - expected[::-1]).max() <= 1
    opaque = np.full_like(values, 65535)
    rgba_rows = np.stack([values, values, values, opaque], axis=-1).astype(">u2").reshape(1, -1)
    path.write_bytes(png_bytes(len(values), 1, 16, 6, rgba_rows))
    assert np.abs(images.load_rgb(path)[0, :, 2] - expected).max() <= 1
    half = np.full_like(values, 32896)  # 16-bit alpha 0.502: black at half -> 127 on white
    grey_alpha_rows = np.stack([np.zeros_like(values), half], axis=-1).astype(">u2").reshape(1, -1)
    path.write_bytes(png_bytes(len(values), 1, 16, 4, grey_alpha_rows))
    assert np.abs(images.load_rgb(path).astype(int) - 127).max() <= 1


def test_sixteen_bit_grey_colour_key_is_white(tmp_path):
    values = grey([0, 1000, 32896, 1000], ">u2")
    path = tmp_path / "grey16_trns.png"
    path.write_bytes(png_bytes(4, 1, 16, 0, values, (b"tRNS", struct.pack(">H", 1000))))
    assert images.load_rgb(path)[0, :, 0].tolist() == [0, 255, 128, 255]


def test_thirty_two_bit_integer_is_sixteen_bit_data_clipped(tmp_path):
    values = [-5, 0, 32896, 65535, 70000]
    path = save(Image.fromarray(grey(values, np.int32), "I"), tmp_path / "int32.tif")
    assert stored_mode(path) == "I"
    assert images.load_rgb(path)[0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_float_convention(tmp_path):
    unit = save(Image.fromarray(grey([0.0, 0.25, 0.5, 1.0], np.float32), "F"), tmp_path / "unit.tif")
    wide = save(Image.fromarray(grey([-2.0, 0.5, 100.0, 300.0], np.float32), "F"), tmp_path / "wide.tif")
    assert stored_mode(unit) == "F"
    assert images.load_rgb(unit)[0, :, 0].tolist() == [0, 64, 128, 255]  # [0, 1] -> x255
    assert images.load_rgb(wide)[0, :, 0].tolist() == [0, 0, 100, 255]  # otherwise clipped to [0, 255]
    nan = save(Image.fromarray(grey([0.0, np.nan], np.float32), "F"), tmp_path / "nan.tif")
    with pytest.raises(images.ImageError, match="NaN") as error:
        images.load_rgb(nan)
    assert str(error.value).startswith(str(nan))


def colour_cases(tmp_path):
    """(name, path, expected RGB [H, W, 3], tolerance) for each mode as a file keeps it."""
    red, green, blue = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    cases = []

    def add(name, image, expected, tolerance=0, **options):
        path = tmp_path / name
        image.save(path, **options)
        expected = np.asarray(expected, dtype=float)
        cases.append((name, path, expected if expected.ndim == 3 else expected[None], tolerance))

    bits = Image.new("1", (3, 1))
    bits.putdata([0, 1, 0])
    add("bilevel.png", bits, [(0,) * 3, (255,) * 3, (0,) * 3])
    add("bilevel_trns.png", bits, [(255,) * 3] * 3, transparency=0)  # black is the transparent value: white
    luminance = Image.fromarray(grey([0, 100, 7], np.uint8))
    add("grey.png", luminance, [(0,) * 3, (100,) * 3, (7,) * 3])
    add("grey_trns.png", luminance, [(0,) * 3, (100,) * 3, (255,) * 3], transparency=7)
    add("grey_alpha.png", Image.fromarray(np.array([[[100, 255], [100, 128], [100, 0]]], np.uint8), "LA"), [(100,) * 3, (177,) * 3, (255,) * 3], 1)
    palette = Image.new("P", (3, 1))
    palette.putpalette([*red, *green, *blue])
    palette.putdata([0, 1, 2])
    add("palette.png", palette, [red, green, blue])
    add("palette_index_trns.png", palette, [red, (255,) * 3, blue], transparency=1)
    add("palette_index_trns.gif", palette, [red, (255,) * 3, blue], transparency=1)
    add("palette_entry_trns.png", palette, [red, (127, 255, 127), (255,) * 3], 1, transparency=bytes([255, 128, 0]))
    rgba_palette = Image.new("P", (3, 1))
    rgba_palette.putpalette([*red, 255, *green, 128, *blue, 0], "RGBA")
    rgba_palette.putdata([0, 1, 2])
    add("palette_rgba_entries.png", rgba_palette, [red, (127, 255, 127), (255,) * 3], 1)
    palette_alpha = Image.new("PA", (3, 1))
    palette_alpha.putpalette([*red, *green, *blue])
    palette_alpha.putdata([(0, 255), (1, 128), (2, 0)])
    add("palette_alpha.tif", palette_alpha, [red, (127, 255, 127), (255,) * 3], 1)
    colours = Image.fromarray(np.array([[red, (10, 20, 30), (9, 9, 9)]], np.uint8))
    add("rgb.png", colours, [red, (10, 20, 30), (9, 9, 9)])
    add("rgb_trns.png", colours, [red, (10, 20, 30), (255,) * 3], transparency=(9, 9, 9))
    alpha = Image.fromarray(np.array([[(255, 0, 0, 255), (255, 0, 0, 128), (0, 0, 255, 0)]], np.uint8), "RGBA")
    half_red = (255, 127, 127)  # red at alpha 128/255 on white: 255 * 127/255 in green and blue
    add("rgba.png", alpha, [red, half_red, (255,) * 3], 1)
    add("rgba.webp", alpha, [red, half_red, (255,) * 3], 1, lossless=True)
    add("cmyk.tif", Image.new("CMYK", (3, 1), (0, 255, 255, 0)), [red] * 3)
    add("cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), np.full((16, 16, 3), red), 3, quality=95)
    add("ycbcr.tif", colours.convert("YCbCr"), [red, (10, 20, 30), (9, 9, 9)], 2)
    lab = Image.new("LAB", (2, 1))
    lab.putdata([(255, 128, 128), (0, 128, 128)])  # L* 100 and 0, neutral: white and black
    add("lab.tif", lab, [(255,) * 3, (0,) * 3], 2)
    return cases


def test_every_mode_decodes_to_the_expected_rgb(tmp_path):
    kept = {"bilevel.png": "1", "grey_alpha.png": "LA", "palette_alpha.tif": "PA", "cmyk.tif": "CMYK", "cmyk.jpg": "CMYK", "ycbcr.tif": "YCbCr", "lab.tif": "LAB", "rgba.webp": "RGBA"}
    for name, path, expected, tolerance in colour_cases(tmp_path):
        if name in kept:
            assert stored_mode(path) == kept[name], f"{name}: the file no longer keeps mode {kept[name]}"
        rgb = images.load_rgb(path)
        assert rgb.dtype == np.uint8 and rgb.shape == expected.shape, name
        assert np.abs(rgb - expected).max() <= tolerance, f"{name}: {rgb.tolist()} != {expected.tolist()}"
        assert rgb.flags.writeable


def test_premultiplied_alpha(tmp_path):
    """Associated alpha (TIFF ExtraSamples = 1; Pillow's RGBa / La): on white, colour + (255 - alpha)."""
    premultiplied = np.array([[(100, 50, 0, 128), (200, 10, 5, 255), (0, 0, 0, 0)]], np.uint8)
    on_white = [[[227, 177, 127], [200, 10, 5], [255, 255, 255]]]
    assert images.rgb_array(Image.fromarray(premultiplied, "RGBa")).tolist() == on_white  # exact
    colour = tiff_with_associated_alpha(Image.fromarray(premultiplied, "RGBA"), tmp_path / "rgba_premultiplied.tif")
    assert stored_mode(colour) == "RGBA"  # Pillow un-premultiplies colour TIFFs while decoding: within 1
    assert np.abs(images.load_rgb(colour).astype(int) - on_white).max() <= 1
    luminance = tiff_with_associated_alpha(Image.fromarray(np.array([[(60, 128), (0, 0)]], np.uint8), "LA"), tmp_path / "la_premultiplied.tif")
    assert stored_mode(luminance) == "La"
    assert images.load_rgb(luminance)[0, :, 0].tolist() == [187, 255]


def test_every_pillow_mode_has_a_conversion():
    """A mode Pillow adds later fails here rather than decoding wrongly."""
    for mode in Image.MODES:
        rgb = images.rgb_array(Image.new(mode, (2, 3)))
        assert rgb.shape == (3, 2, 3) and rgb.dtype == np.uint8, mode
    assert images.rgb_array(Image.new("HSV", (1, 1), (85, 255, 255))).tolist() == [[[0, 255, 0]]]
    assert images.rgb_array(Image.new("RGBX", (1, 1), (1, 2, 3, 4))).tolist() == [[[1, 2, 3]]]


def test_first_frame_of_animations_and_multipage_files(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    gif, tiff = tmp_path / "animated.gif", tmp_path / "pages.tif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    frames[0].save(tiff, save_all=True, append_images=frames[1:])
    for path in (gif, tiff):
        with Image.open(path) as stored:
            assert stored.n_frames == 2
        assert (images.load_rgb(path) == (255, 0, 0)).all(), path.name


def upright_image() -> np.ndarray:
    """48x32 (W x H) in flat 16-px blocks of six colours: no rotation or flip maps it onto itself."""
    colours = np.array([[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(255, 255, 0), (0, 255, 255), (255, 0, 255)]], np.uint8)
    return colours.repeat(16, axis=0).repeat(16, axis=1)


def stored_as(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores with this EXIF orientation, from the EXIF definition of where the
    stored 0th row and column appear (1: top/left, 2: top/right, ..., 8: left/bottom)."""
    t = upright.transpose(1, 0, 2)
    return {1: upright, 2: upright[:, ::-1], 3: upright[::-1, ::-1], 4: upright[::-1],
            5: t, 6: t[::-1], 7: t[::-1, ::-1], 8: t[:, ::-1]}[orientation]


def with_orientation(path, pixels: np.ndarray, orientation: int, **options):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, exif=exif, **options)
    return path


@pytest.mark.parametrize("suffix, options, tolerance", [("png", {}, 0), ("webp", {"lossless": True}, 0), ("jpg", {"quality": 95, "subsampling": 0}, 12)])
def test_exif_orientation_applied_only_when_asked(tmp_path, suffix, options, tolerance):
    upright = upright_image()
    for orientation in range(1, 9):
        stored = stored_as(upright, orientation)
        path = with_orientation(tmp_path / f"o{orientation}.{suffix}", stored, orientation, **options)
        shown, raw = images.load_rgb(path, apply_exif_orientation=True), images.load_rgb(path)
        assert shown.shape == upright.shape and np.abs(shown.astype(int) - upright).max() <= tolerance, orientation
        assert raw.shape == stored.shape and np.abs(raw.astype(int) - stored).max() <= tolerance, orientation
        assert images.read_size(path, apply_exif_orientation=True) == (shown.shape[1], shown.shape[0])
        assert images.read_size(path) == (raw.shape[1], raw.shape[0])
        assert data.image_info(path, min_side=1, apply_exif_orientation=True)[:2] == (shown.shape[1], shown.shape[0])


def test_tiff_orientation_is_applied_by_pillow_and_sizes_agree(tmp_path):
    """Pillow's TIFF reader applies the tag while decoding: upright either way, sizes consistent."""
    upright = upright_image()
    for orientation in (1, 3, 6, 8):
        path = with_orientation(tmp_path / f"o{orientation}.tif", stored_as(upright, orientation), orientation)
        for apply in (False, True):
            rgb = images.load_rgb(path, apply_exif_orientation=apply)
            assert np.array_equal(rgb, upright), (orientation, apply)
            assert images.read_size(path, apply_exif_orientation=apply) == (rgb.shape[1], rgb.shape[0])


def test_max_side_keeps_the_aspect_ratio(tmp_path):
    landscape = save(Image.new("RGB", (300, 200), (10, 100, 200)), tmp_path / "landscape.png")
    portrait = save(Image.new("RGB", (120, 300), (10, 100, 200)), tmp_path / "portrait.png")
    assert images.load_rgb(landscape, max_side=150).shape == (100, 150, 3)
    assert images.load_rgb(portrait, max_side=100).shape == (100, 40, 3)
    assert images.load_rgb(landscape, max_side=300).shape == (200, 300, 3)  # never upscaled
    assert images.load_rgb(landscape, max_side=1000).shape == (200, 300, 3)
    assert (np.abs(images.load_rgb(landscape, max_side=150).astype(int) - (10, 100, 200)) <= 1).all()
    rotated = with_orientation(tmp_path / "rotated.png", np.zeros((200, 300, 3), np.uint8), 6)
    assert images.load_rgb(rotated, apply_exif_orientation=True, max_side=150).shape == (150, 100, 3)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_side"):
            images.load_rgb(landscape, max_side=bad)


def test_large_jpeg_is_decoded_in_draft_mode(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (2401, 1601), (200, 30, 30)), tmp_path / "large.jpg", quality=90)
    decoded_sizes = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original_draft(self, mode, size)
        decoded_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    rgb = images.load_rgb(path, max_side=np.int64(300))
    assert rgb.shape == (200, 300, 3) and (np.abs(rgb.astype(int) - (200, 30, 30)) <= 3).all()
    assert decoded_sizes == [(601, 401)]  # a quarter of each side (rounded up): 1/16 of the pixels decoded


def test_decompression_bomb_is_a_per_file_error(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(30000, 30000, 8, 0, None))
    assert bomb.stat().st_size < 200
    for call in (images.load_rgb, images.read_size):
        with pytest.raises(images.ImageError) as error:
            call(bomb)
        assert str(error.value).startswith(f"{bomb}: 900000000 pixels exceeds the limit of {images.MAX_PIXELS}")
        assert "decompression-bomb" in str(error.value) and "MLSP_MAX_PIXELS=900000000" in str(error.value)  # how to let it through
    width, height, reason = data.image_info(bomb)
    assert (width, height) == (0, 0) and reason.startswith("unreadable: 900000000 pixels exceeds")


def test_the_pixel_limit_is_raised_from_the_environment_and_a_bad_value_is_named(tmp_path):
    assert images.pixel_limit_from_environment({}) == 250_000_000
    assert images.pixel_limit_from_environment({"MLSP_MAX_PIXELS": " 4e8 "}) == 400_000_000
    for bad in ("0", "-5", "many", "nan", "inf"):
        with pytest.raises(ValueError, match=rf"MLSP_MAX_PIXELS='{bad}': must be a positive number of pixels"):
            images.pixel_limit_from_environment({"MLSP_MAX_PIXELS": bad})
    # the header of a 900 MP file passes in a fresh process started with the limit its error suggests
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(30000, 30000, 8, 0, None))
    code = "import sys; from mlsp import images; print(images.read_size(sys.argv[1]), images.MAX_PIXELS)"
    done = subprocess.run([sys.executable, "-c", code, str(bomb)], env={**os.environ, "MLSP_MAX_PIXELS": "900000000"}, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["(30000,", "30000)", "900000000"], done.stderr


def test_pixel_limit_boundary_and_no_warning_below_it(tmp_path, monkeypatch):
    """Pillow's own guard warns from 89 MP; ours alone decides, at exactly MAX_PIXELS."""
    phone = tmp_path / "phone.png"
    phone.write_bytes(png_bytes(12000, 9000, 8, 0, None))  # 108 MP: a header only, never decoded here
    assert images.read_size(phone) == (12000, 9000)  # no DecompressionBombWarning (warnings are errors)
    small = save(Image.new("L", (10, 10)), tmp_path / "small.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    assert images.load_rgb(small).shape == (10, 10, 3)
    monkeypatch.setattr(images, "MAX_PIXELS", 99)
    with pytest.raises(images.ImageError, match="100 pixels exceeds the limit of 99"):
        images.load_rgb(small)


def test_broken_files_raise_image_error_naming_the_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)  # the data outweighs the header
    jpeg = save(Image.fromarray(noise), tmp_path / "whole.jpg")
    truncated_jpeg = tmp_path / "truncated.jpg"
    truncated_jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    png = save(Image.fromarray(noise), tmp_path / "whole.png")
    truncated_png = tmp_path / "truncated.png"
    truncated_png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    empty, text, missing, folder = tmp_path / "empty.jpg", tmp_path / "text.jpg", tmp_path / "missing.jpg", tmp_path / "folder.jpg"
    empty.write_bytes(b"")
    text.write_text("not an image at all\n")
    folder.mkdir()
    reasons = {truncated_jpeg: "truncated", truncated_png: "truncated", empty: "empty file", text: "not an image", missing: "not found", folder: "directory"}
    for path, reason in reasons.items():
        with pytest.raises(images.ImageError, match=reason) as error:
            images.load_rgb(path)
        assert str(error.value).startswith(f"{path}: ") and error.value.path == str(path)
    for path in (empty, text, missing, folder):  # the header alone already fails
        with pytest.raises(images.ImageError, match=reasons[path]):
            images.read_size(path)
    assert images.read_size(truncated_jpeg) == (120, 90)  # the header is whole; the data is not
    assert data.image_info(truncated_jpeg, verify=False)[2] is None
    assert "truncated" in data.image_info(truncated_jpeg)[2]


def test_files_that_are_not_regular_are_refused_before_opening(tmp_path, monkeypatch, no_hang):
    import os
    import socket

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    no_hang(fifo)
    zero, urandom, folder = tmp_path / "zero.jpg", tmp_path / "random.png", tmp_path / "folder.jpg"
    zero.symlink_to("/dev/zero")
    urandom.symlink_to("/dev/urandom")
    folder.mkdir()
    monkeypatch.chdir(tmp_path)  # a socket's path must be short (108 bytes): bound by its relative name
    listening = socket.socket(socket.AF_UNIX)
    listening.bind("socket.jpg")
    try:
        reasons = {
            fifo: "a named pipe (FIFO), not a regular file",
            zero: "a character device (through a symbolic link to /dev/zero), not a regular file",
            urandom: "a character device (through a symbolic link to /dev/urandom), not a regular file",
            folder: "a directory, not a regular file",
            tmp_path / "socket.jpg": "a socket, not a regular file",
        }
        for path, reason in reasons.items():
            for read in (images.load_rgb, images.read_size):
                with pytest.raises(images.ImageError) as error:
                    read(path)
                assert str(error.value) == f"{path}: {reason}" and error.value.reason == reason
            assert data.image_info(path) == (0, 0, f"unreadable: {reason}")
    finally:
        listening.close()


def test_image_error_is_a_value_error_with_its_parts():
    error = images.ImageError("a/b.jpg", "too small")
    assert isinstance(error, ValueError) and str(error) == "a/b.jpg: too small"
    assert (error.path, error.reason) == ("a/b.jpg", "too small")
    assert str(images.ImageError("a/b.jpg: anything")) == "a/b.jpg: anything"


@pytest.fixture(scope="module", params=["inception_v3", "inception_resnet_v2"])
def inception(request):
    return backbones.architecture(request.param)


def test_inception_smallest_input_is_75_px(inception):
    """The derived limit is the real network's: the forward pass runs at 75 and fails at 74."""
    assert backbones.derived_min_input_side(inception.name) == backbones.min_input_side(inception.name) == 75
    assert inception.model(np.zeros((1, 75, 75, 3), np.float32)).shape[1:3] == (1, 1)
    for shape in ((1, 74, 75, 3), (1, 75, 74, 3)):
        with pytest.raises(ValueError, match="empty output|zero or negative"):
            inception.model(np.zeros(shape, np.float32))


def test_inception_augmented_crops_need_86_px(inception):
    assert backbones.min_image_side(inception.name, augment=False) == 75
    assert backbones.min_image_side(inception.name, augment=True) == 86
    fits = features.views(np.zeros((86, 120, 3), np.uint8), "original", augment=True)
    assert fits.shape[1:3] == (75, 105)
    assert inception.model(fits[:1].astype(np.float32)).shape[1:3] == (1, 1)
    too_small = features.views(np.zeros((85, 120, 3), np.uint8), "original", augment=True)
    with pytest.raises(ValueError, match="empty output|zero or negative"):
        inception.model(too_small[:1].astype(np.float32))


def test_lite0_smallest_input_is_its_total_stride():
    """'same' padding accepts 1 px; the floor is the total stride (32), where the deepest block's
    one cell still covers the whole image rather than padding."""
    lite0 = backbones.architecture("efficientnet_lite0")
    assert lite0.model.compute_output_shape((1, 1, 1, 3))[1:3] == (1, 1)
    assert lite0.model.compute_output_shape((1, 256, 256, 3))[1:3] == (8, 8)  # stride 32
    assert backbones.derived_min_input_side("efficientnet_lite0") == backbones.min_input_side("efficientnet_lite0") == 32


def test_the_recorded_smallest_inputs_are_what_the_networks_give():
    """Every backbone has a recorded side (so no notebook builds a network to ask), equal to the derivation."""
    assert set(backbones.MIN_INPUT_SIDES) == set(backbones.BACKBONES)
    assert {name: backbones.derived_min_input_side(name) for name in backbones.BACKBONES} == backbones.MIN_INPUT_SIDES
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        backbones.min_input_side("vgg16")
    assert backbones.min_image_side("efficientnet_lite0", augment=True) == 36  # crop_size: round(31.5) = 32
    assert data.MIN_SIDE == min(backbones.min_input_side(name) for name in backbones.BACKBONES)


def test_orientation_from_xmp_and_broken_exif(tmp_path):
    """Orientation stored only in XMP is applied too; an unreadable EXIF block means "as stored"."""
    from PIL import PngImagePlugin

    upright = upright_image()
    xmp = PngImagePlugin.PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                 '<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')
    path = save(Image.fromarray(np.ascontiguousarray(stored_as(upright, 6))), tmp_path / "xmp.png", pnginfo=xmp)
    assert np.array_equal(images.load_rgb(path, apply_exif_orientation=True), upright)
    assert images.read_size(path, apply_exif_orientation=True) == (48, 32) and images.read_size(path) == (32, 48)
    broken = tmp_path / "broken_exif.png"
    Image.fromarray(upright).save(broken, exif=b"Exif\x00\x00" + b"\xff" * 40)
    assert np.array_equal(images.load_rgb(broken, apply_exif_orientation=True), upright)
    assert images.read_size(broken, apply_exif_orientation=True) == (48, 32)


def test_a_small_file_whose_decoding_would_take_gigabytes_is_refused_before_decoding(tmp_path):
    """MAX_PIXELS counts pixels; memory is pixels x bytes a pixel: a 192 MP RGB PNG of 0.6 MB took
    2.1 GB to decode, a 225 MP 16-bit grey one 4.4 GB. Headers only here: a refused file is never decoded."""
    rgb = tmp_path / "flat.png"
    rgb.write_bytes(png_bytes(16000, 12000, 8, 2, None))
    grey16 = tmp_path / "grey16.png"
    grey16.write_bytes(png_bytes(15000, 15000, 16, 0, None))
    for path, size, mode in ((rgb, "16000x12000", "RGB"), (grey16, "15000x15000", "I;16")):
        with pytest.raises(images.ImageError) as error:
            images.load_rgb(path, apply_exif_orientation=True, max_side=800)
        message = str(error.value)
        assert message.startswith(f"{path}: decoding it would take about ") and "GiB of memory" in message
        assert f"({size} pixels, mode {mode}," in message and "MLSP_MAX_DECODE_GIB=" in message  # how a CLI user raises it
        assert images.read_size(path) == tuple(map(int, size.split("x")))  # the header alone is fine
        width, height, reason = data.image_info(path)  # notebook 00 goes through the same check
        assert (width, height) == (0, 0) and reason.startswith("unreadable: decoding it would take about ")


def test_the_decoding_limit_is_raised_from_the_environment_and_a_bad_value_is_named(tmp_path):
    assert images.decode_limit_from_environment({}) == 2**30
    assert images.decode_limit_from_environment({"MLSP_MAX_DECODE_GIB": " 4 "}) == 4 * 2**30
    assert images.decode_limit_from_environment({"MLSP_MAX_DECODE_GIB": "0.5"}) == 2**29
    for bad in ("0", "-1", "four", "nan", "inf"):
        with pytest.raises(ValueError, match=rf"MLSP_MAX_DECODE_GIB='{bad}': must be a positive number of GiB"):
            images.decode_limit_from_environment({"MLSP_MAX_DECODE_GIB": bad})
    # a file the default limit refuses (2.1 GB estimated) passes the check under a raised limit, set
    # in the environment of a fresh process as a user would
    flat = tmp_path / "flat.png"
    flat.write_bytes(png_bytes(16000, 12000, 8, 2, None))
    code = (
        "import sys; from PIL import Image; from mlsp import images\n"
        "with Image.open(sys.argv[1]) as image: images.check_decode_bytes(sys.argv[1], image)\n"
        "print(images.MAX_DECODE_BYTES)"
    )
    environment = {**os.environ, "MLSP_MAX_DECODE_GIB": "3"}
    done = subprocess.run([sys.executable, "-c", code, str(flat)], env=environment, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == str(3 * 2**30), done.stderr


def test_the_decoding_estimate_counts_the_mode_and_lets_camera_photos_through(tmp_path):
    camera = tmp_path / "camera.png"
    camera.write_bytes(png_bytes(8660, 5773, 8, 2, None))  # 50 MP 8-bit RGB
    with Image.open(camera) as image:
        assert images.decode_bytes(image, transposed=True) < images.MAX_DECODE_BYTES
    estimates = {}
    for name, depth, colour_type in (("grey", 8, 0), ("grey16", 16, 0), ("rgb", 8, 2), ("rgba", 8, 6)):
        path = tmp_path / f"{name}.png"
        path.write_bytes(png_bytes(1000, 1000, depth, colour_type, None))
        with Image.open(path) as image:
            estimates[name] = images.decode_bytes(image) / 1e6
    # bytes a pixel, as measured with getrusage at 250 MP (within 5%)
    assert estimates == {"grey": 11, "grey16": 20, "rgb": 10, "rgba": 18}


def test_a_jpeg_is_held_to_the_memory_limit_at_its_draft_size(tmp_path, monkeypatch):
    photo = np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)
    jpeg = save(Image.fromarray(photo), tmp_path / "photo.jpg")
    png = save(Image.fromarray(photo), tmp_path / "photo.png")
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", 10_000_000)  # 3 MP x 10 bytes in full; 1/16 of that drafted
    assert images.load_rgb(jpeg, max_side=200).shape == (150, 200, 3)
    with pytest.raises(images.ImageError, match=r"2000x1500 pixels, mode RGB"):
        images.load_rgb(jpeg)
    with pytest.raises(images.ImageError, match=r"2000x1500 pixels, mode RGB"):
        images.load_rgb(png, max_side=200)  # no draft mode outside JPEG
