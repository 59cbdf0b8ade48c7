"""The embedded AVA-format generator: the uniform set (demo, smoke) and the AVA-shaped one (rehearsal)."""
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO
from mlsp import data, embedded, images

# MANIFEST digest of generate(tmp, 48, seed=0, min_side=160, max_side=400) (the smoke profile's set),
# computed from the generator as it was before shape="ava" existed (commit 58ed9b1), with
# requirements.lock's numpy 2.4.6, Pillow 13.0.0 and scikit-image 0.26.0. The uniform set must stay
# byte for byte what it was: the demo's and smoke's recorded results depend on it. Other versions of
# those packages may change the bytes; re-record only after checking that nothing else did.
UNIFORM_SMOKE_DIGEST = "b1313a3adcd8198d4f856e692ebe7471d652667142d56f17d20ec0c175d7c5f7"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INCEPTION_MIN_SIDE = 86  # the shorter side the Inceptions need with 87.5% crops (design notes)
AVA_N = 40  # oddities at 5% / 1% / 5% / 1%, at least one each: 2, 1, 2, 1 (worked out here, not read from the module)
AVA_ODDITY_COUNTS = {"greyscale": 2, "cmyk": 1, "progressive": 2, "png": 1}


def test_uniform_set_is_byte_for_byte_what_it_was(tmp_path):
    folder = embedded.generate(tmp_path, 48, seed=0, min_side=160, max_side=400)
    assert embedded.manifest_digest(folder) == UNIFORM_SMOKE_DIGEST


def test_embedded_set_is_deterministic_and_readable(tmp_path):
    one = embedded.generate(tmp_path / "a", 6, seed=5, min_side=64, max_side=160)
    two = embedded.generate(tmp_path / "b", 6, seed=5, min_side=64, max_side=160)
    three = embedded.generate(tmp_path / "c", 6, seed=6, min_side=64, max_side=160)
    assert embedded.manifest_digest(one) == embedded.manifest_digest(two) != embedded.manifest_digest(three)
    metadata, unreadable, problems = data.read_ava(one, seed=0, validation_fraction=0.5, progress=False)
    assert len(metadata) == 6 and metadata[["width", "height"]].max().max() <= 160
    assert set(unreadable["reason"].str.split(":").str[0]) == {"file missing", "unreadable"}  # the planted problem cases
    assert [(problem.kind, problem.image_id) for problem in problems] == [(data.AVA_ROW, "999002"), (data.AVA_ROW, "100001"), (data.TEST_ID_NOT_IN_AVA, "999004")]
    assert "not human ratings" in (one / "DATA_CARD.md").read_text().lower()
    assert (metadata["n_votes"] > 150).all()


def test_ava_sizes_follow_avas_shape():
    sizes = embedded.ava_sizes(400, seed=0)
    width, height = sizes[:, 0], sizes[:, 1]
    long_side, short_side = sizes.max(axis=1), sizes.min(axis=1)
    assert sizes.shape == (400, 2) and sizes.dtype == np.int64
    assert long_side.max() == 800 and long_side.min() >= 360  # dpchallenge's cap; the distribution's floor at 0.45 x 800
    assert 0.3 < (long_side == 800).mean() < 0.5  # many exactly at the cap, not all
    assert (width > height).sum() > 250 and (height > width).sum() > 30  # mostly landscape, portraits too
    assert (width == height).sum() >= 1 and (long_side / short_side > 2.1).sum() >= 5  # squares and panoramas
    assert short_side.min() >= INCEPTION_MIN_SIDE  # only the planted tiny image is too small
    assert 580 <= width.mean() <= 680 and 450 <= height.mean() <= 560  # AVA: about 629 x 497
    # many sizes, and many repeated as in AVA: the camera frames at dpchallenge's 800 px cap above all
    counts = {tuple(size): int(count) for size, count in zip(*np.unique(sizes, axis=0, return_counts=True))}
    assert len(counts) >= 200 and sum(count for count in counts.values() if count > 1) >= 0.3 * len(sizes)
    assert min(counts[(800, 600)], counts[(800, 533)]) >= 10 and counts[(533, 800)] >= 2 and counts[(600, 800)] >= 2
    assert np.array_equal(embedded.ava_sizes(400, seed=0), sizes) and not np.array_equal(embedded.ava_sizes(400, seed=1), sizes)


def test_ava_sizes_repeat_about_as_often_as_avas():
    # AVA: ~25,000 distinct sizes among its 255,530 images (design notes); the draws, about as many
    for seed in (0, 1):
        distinct = len(np.unique(embedded.ava_sizes(255_530, seed=seed), axis=0))
        assert 20_000 <= distinct <= 31_000, distinct


def test_the_rehearsal_set_holds_images_of_equal_size():
    """Extraction batches full-resolution images only with their equal sizes (batch_images): the
    rehearsal's own set must have some, or that path never runs there."""
    profile = {**yaml.safe_load((REPO / "params/rehearsal/common.yaml").read_text()), **yaml.safe_load((REPO / "params/rehearsal/00_data.yaml").read_text())}
    assert profile["embedded_shape"] == "ava"
    sizes = embedded.ava_sizes(profile["embedded_images"], profile["seed"], profile["embedded_min_side"], profile["embedded_max_side"])
    _, counts = np.unique(sizes, axis=0, return_counts=True)
    assert counts.max() >= 2 and sizes.max() <= profile["embedded_max_side"]


def test_ava_sizes_keep_within_the_sides_asked_for():
    sizes = embedded.ava_sizes(200, seed=2, min_side=300, max_side=400)
    assert sizes.max() == 400 and sizes.max(axis=1).min() >= 300
    with pytest.raises(ValueError, match="min_side <= max_side"):
        embedded.ava_sizes(5, seed=0, min_side=500, max_side=400)


def kind_of(path):
    """What the file is, read from its bytes and Pillow's header, not from the generator."""
    if path.read_bytes().startswith(PNG_MAGIC):
        return "png"
    with Image.open(path) as image:
        assert image.format == "JPEG", path
        if image.mode == "L":
            return "greyscale"
        if image.mode == "CMYK":
            return "cmyk"
        if image.info.get("progressive") or image.info.get("progression"):
            return "progressive"
        return "baseline" if image.mode == "RGB" else image.mode


@pytest.fixture(scope="module")
def ava_set(tmp_path_factory):
    return embedded.generate(tmp_path_factory.mktemp("ava"), AVA_N, seed=1, shape="ava")


def test_ava_set_holds_each_usable_oddity_as_its_card_says(ava_set):
    ordinary = [ava_set / "images" / f"{100000 + index}.jpg" for index in range(AVA_N)]
    kinds = {path.stem: kind_of(path) for path in ordinary}
    found = {kind: sorted(image_id for image_id, of in kinds.items() if of == kind) for kind in AVA_ODDITY_COUNTS}
    assert {kind: len(ids) for kind, ids in found.items()} == AVA_ODDITY_COUNTS
    assert sum(kind == "baseline" for kind in kinds.values()) == AVA_N - sum(AVA_ODDITY_COUNTS.values())
    card = (ava_set / "DATA_CARD.md").read_text()
    for kind, line_start in (("greyscale", "- greyscale JPEG"), ("cmyk", "- CMYK JPEG"), ("progressive", "- progressive JPEG"), ("png", "- PNG saved under")):
        line = next(line for line in card.splitlines() if line.startswith(line_start))
        assert line.split(":")[1].split()[0] == str(AVA_ODDITY_COUNTS[kind])
        assert sorted(re.findall(r"\d{6}", line)) == found[kind]
    assert "not human ratings" in card.lower()


def test_ava_set_images_have_the_drawn_sizes_and_the_oddities_decode_to_rgb(ava_set):
    expected = embedded.ava_sizes(AVA_N, seed=1)
    for index in range(AVA_N):
        path = ava_set / "images" / f"{100000 + index}.jpg"
        assert images.read_size(path) == tuple(expected[index])
        if kind_of(path) != "baseline":
            rgb = images.load_rgb(path)
            assert rgb.shape == (expected[index][1], expected[index][0], 3) and rgb.dtype == np.uint8
            assert 10 < rgb.mean() < 245 and rgb.std() > 5  # a photo, not a blank or a negative of nothing


def test_cmyk_and_greyscale_files_hold_the_photo_not_a_negative(tmp_path):
    # the same photo encoded plainly and as each oddity must decode to nearly the same pixels
    rng = np.random.default_rng(0)
    photo = embedded._crop_to_size(rng, embedded.source_photos()["chelsea"], (240, 180))
    plain = photo_of(tmp_path / "plain.jpg", embedded._encode(photo, 92))
    for oddity in embedded.ODDITIES:
        decoded = photo_of(tmp_path / f"{oddity}.jpg", embedded._encode(photo, 92, oddity)).astype(float)
        reference = plain.astype(float)
        if oddity == "greyscale":  # grey decodes to three equal channels: compare with the photo's luma
            assert (decoded[..., 0] == decoded[..., 2]).all()
            decoded, reference = decoded[..., 0], np.asarray(Image.fromarray(plain).convert("L"), dtype=float)
        assert np.abs(decoded - reference).mean() < 6, oddity


def photo_of(path, content):
    path.write_bytes(content)
    return images.load_rgb(path)


def test_ava_set_reports_exactly_the_truncated_missing_and_tiny_files(ava_set):
    metadata, unreadable, problems = data.read_ava(ava_set, seed=0, min_side=INCEPTION_MIN_SIDE, progress=False)
    reasons = dict(zip(unreadable["image_id"], unreadable["reason"]))
    assert sorted(reasons) == ["999001", "999003", "999005"]
    assert reasons["999001"] == data.FILE_MISSING
    assert reasons["999003"].startswith("unreadable:") and "truncated" in reasons["999003"]
    assert reasons["999005"].startswith("too small (80x60")
    # every oddity is read, and the panorama that only extraction refuses
    assert sorted(metadata["image_id"]) == [str(100000 + index) for index in range(AVA_N)] + ["999006"]
    test_list = (ava_set / "generic_test.jpgl").read_text().split()
    assert {"999001", "999005", "999004", "999006"} <= set(test_list)
    assert set(unreadable.loc[unreadable["image_id"].isin(["999001", "999005"]), "set"]) == {"test"}
    assert [(problem.kind, problem.image_id) for problem in problems] == [(data.AVA_ROW, "999002"), (data.AVA_ROW, "100001"), (data.TEST_ID_NOT_IN_AVA, "999004")]
    _, at_kit_minimum, _ = data.read_ava(ava_set, seed=0, progress=False)  # 32 px: the tiny image is usable there
    assert sorted(at_kit_minimum["image_id"]) == ["999001", "999003"]


def test_the_panorama_passes_notebook_00_and_is_refused_at_full_size(ava_set):
    """What notebook 00 checks (header, a verifying decode at reduced scale) passes; what extraction
    does (a full-size decode) is refused before any pixel is decoded, with the reason it will list."""
    path = ava_set / "images" / "999006.jpg"
    width, height, reason = data.image_info(path, verify=True, min_side=INCEPTION_MIN_SIDE)
    assert (width, height, reason) == (30000, 4000, None) and width * height < images.MAX_PIXELS
    strip = images.load_rgb(path, max_side=800)  # decoded at 1/8 scale: a photo, not a flat grey
    assert strip.shape == (107, 800, 3) and strip.std() > 10
    with pytest.raises(images.ImageError, match=r"decoding it would take about 1\.2 GiB .*30000x4000 pixels, mode L") as refused:
        images.load_rgb(path)
    assert refused.value.path == str(path) and path.stat().st_size < 4_000_000
    line = next(line for line in (ava_set / "DATA_CARD.md").read_text().splitlines() if line.startswith("- full-resolution panorama"))
    assert "1 (999006*)" in line and "30000x4000" in line and "under the header limit of 250 MP, over the decoding limit of 1 GiB" in line


def test_the_card_names_the_repeated_sizes(ava_set):
    sizes = embedded.ava_sizes(AVA_N, seed=1)
    values, counts = np.unique(sizes, axis=0, return_counts=True)
    card = (ava_set / "DATA_CARD.md").read_text()
    repeated = card.replace("\n", " ").split("(repeated: ")[1].split("), longest side")[0]
    assert counts.max() >= 2
    for (width, height), count in zip(values, counts):
        assert (f"{width}x{height} ({count})" in repeated) == (count > 1)


def test_ava_test_list_is_an_exact_share_drawn_apart_from_the_sizes(ava_set):
    # the main stream's noise draws depend on image sizes: a test list drawn there moved with them
    members = embedded.ava_test_members(AVA_N, seed=1, test_fraction=0.25)
    assert len(members) == 10 and len(embedded.ava_test_members(16, seed=0, test_fraction=0.25)) == 4
    listed = set((ava_set / "generic_test.jpgl").read_text().split())
    assert {image_id for image_id in listed if image_id.startswith("1")} == {str(100000 + index) for index in members}


def test_ava_mode_is_deterministic_and_problem_cases_can_be_left_out(tmp_path):
    one = embedded.generate(tmp_path / "a", 6, seed=3, shape="ava", problem_cases=False)
    two = embedded.generate(tmp_path / "b", 6, seed=3, shape="ava", problem_cases=False)
    other = embedded.generate(tmp_path / "c", 6, seed=4, shape="ava", problem_cases=False)
    assert embedded.manifest_digest(one) == embedded.manifest_digest(two) != embedded.manifest_digest(other)
    assert sorted(path.stem for path in (one / "images").iterdir()) == [str(100000 + index) for index in range(6)]
    assert sorted(kind_of(path) for path in (one / "images").iterdir()) == ["baseline", "baseline", "cmyk", "greyscale", "png", "progressive"]
    assert "none (problem_cases=False)" in (one / "DATA_CARD.md").read_text()


def test_shape_and_size_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="shape must be one of uniform, ava"):
        embedded.generate(tmp_path, 6, seed=0, shape="AVA")
    with pytest.raises(ValueError, match="needs at least 5 images"):
        embedded.generate(tmp_path, 4, seed=0, shape="ava")


def test_repeated_ava_sizes_share_few_drawn_sizes_evenly():
    sizes = embedded.repeated_ava_sizes(14, images_per_size=4, seed=2)
    assert sizes.shape == (14, 2) and sizes.dtype == np.int64
    drawn = [tuple(size) for size in embedded.ava_sizes(4, seed=2).tolist()]  # ceil(14 / 4) sizes
    counts = {size: [tuple(row) for row in sizes.tolist()].count(size) for size in drawn}
    assert sorted(counts.values()) == [2, 4, 4, 4]  # four images per size, the last size what is left
    assert (embedded.repeated_ava_sizes(14, 4, seed=2) == sizes).all()
    with pytest.raises(ValueError, match="images_per_size >= 1"):
        embedded.repeated_ava_sizes(14, 0, seed=2)


def test_ava_set_takes_explicit_sizes_and_refuses_wrong_ones(tmp_path):
    sizes = np.array([[96, 72], [72, 96], [96, 72], [90, 90], [96, 72], [72, 96]])
    folder = embedded.generate(tmp_path / "given", 6, seed=0, min_side=64, max_side=96, shape="ava", problem_cases=False, sizes=sizes)
    assert [images.read_size(folder / "images" / f"{100000 + index}.jpg") for index in range(6)] == [tuple(size) for size in sizes.tolist()]
    assert "3 distinct sizes among 6 images" in (folder / "DATA_CARD.md").read_text()
    with pytest.raises(ValueError, match="sizes must be"):
        embedded.generate(tmp_path / "uniform", 6, seed=0, sizes=sizes)
    with pytest.raises(ValueError, match="sizes must be"):
        embedded.generate(tmp_path / "short", 6, seed=0, shape="ava", sizes=sizes[:5])
