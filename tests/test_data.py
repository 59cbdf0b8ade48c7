"""The AVA reader and the embedded data set."""
import numpy as np
import pytest
from PIL import Image

from mlsp import data, embedded

ROWS = """1 1001 0 0 1 2 3 4 0 0 0 0 10 20 300
2 1002 10 0 0 0 0 0 0 0 0 0 0 0 300
3 1003 1 2 3
4 1004 a b c d e f g h i j 0 0 1
5 1001 5 5 5 5 5 5 5 5 5 5 0 0 1

6 1005 0 0 0 0 0 0 0 0 0 0 0 0 1
7 1006 0 0 0 0 0 0 0 0 0 4 0 0 1
"""


def test_parser_reports_malformed_rows_with_line_numbers(tmp_path):
    (tmp_path / "AVA.txt").write_text(ROWS)
    table, problems = data.parse_ava_txt(tmp_path / "AVA.txt")
    assert list(table["image_id"]) == ["1001", "1002", "1006"]
    assert [(p.line, p.image_id) for p in problems] == [(3, "1003"), (4, "1004"), (5, "1001"), (7, "1005")]
    assert "duplicate" in problems[2].reason


def test_mos_and_standard_deviation_by_hand(tmp_path):
    (tmp_path / "AVA.txt").write_text(ROWS)
    table, _ = data.parse_ava_txt(tmp_path / "AVA.txt")
    first = table.iloc[0]  # votes: 1x3, 2x4, 3x5, 4x6
    assert first["n_votes"] == 10
    assert first["mos"] == pytest.approx((3 + 8 + 15 + 24) / 10)  # 5.0
    assert first["mos_std"] == pytest.approx(np.sqrt((1 * 4 + 2 * 1 + 3 * 0 + 4 * 1) / 10))
    assert table.iloc[1]["mos"] == 1.0 and table.iloc[1]["mos_std"] == 0.0
    assert table.iloc[2]["mos"] == 10.0


def make_ava(folder, images: dict, test_ids=()):
    (folder / "images").mkdir(parents=True)
    lines = []
    for index, (image_id, maker) in enumerate(images.items(), start=1):
        if maker is not None:
            maker(folder / "images" / f"{image_id}.jpg")
        lines.append(f"{index} {image_id} 1 1 1 1 1 1 1 1 1 1 0 0 1")
    (folder / "AVA.txt").write_text("\n".join(lines) + "\n")
    (folder / "generic_test.jpgl").write_text("\n".join(test_ids) + "\n")


def rgb(size=(64, 48), mode="RGB", fmt="JPEG"):
    def maker(path):
        colour = {"RGB": (200, 30, 30), "CMYK": (0, 200, 200, 0), "RGBA": (10, 200, 10, 0), "L": 128, "P": 3}[mode]
        Image.new(mode, size, colour).save(path, format=fmt)
    return maker


def truncated(path):
    rgb((120, 90))(path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def test_bad_images_are_reported_and_excluded(tmp_path):
    make_ava(tmp_path, {
        "1": rgb(), "2": rgb(mode="CMYK"), "3": rgb(mode="RGBA", fmt="PNG"), "4": rgb(mode="L"), "5": rgb(mode="P", fmt="PNG"),
        "6": None, "7": truncated, "8": rgb(size=(20, 200)), "9": lambda p: p.write_bytes(b"not an image"),
    })
    metadata, unreadable, _ = data.build_metadata(tmp_path, seed=0, progress=False)
    assert sorted(metadata["image_id"]) == ["1", "2", "3", "4", "5"]
    reasons = dict(zip(unreadable["image_id"], unreadable["reason"]))
    assert reasons["6"] == "file missing" and "truncated" in reasons["7"].lower() and "too small" in reasons["8"] and "unreadable" in reasons["9"]
    assert list(metadata.columns) == data.METADATA_COLUMNS
    for image_id in ("2", "3", "4", "5"):  # CMYK, alpha PNG, grayscale, palette -> RGB
        image = data.load_rgb(tmp_path / "images" / f"{image_id}.jpg")
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert tuple(data.load_rgb(tmp_path / "images" / "3.jpg")[0, 0]) == (255, 255, 255)  # transparent -> white


def test_split_sizes_and_determinism(tmp_path):
    make_ava(tmp_path, {str(i): rgb() for i in range(60)}, test_ids=[str(i) for i in range(10)])
    first, _, _ = data.build_metadata(tmp_path, seed=3, progress=False, verify_images=False)
    again, _, _ = data.build_metadata(tmp_path, seed=3, progress=False, verify_images=False)
    other, _, _ = data.build_metadata(tmp_path, seed=4, progress=False, verify_images=False)
    counts = first["set"].value_counts()
    assert counts["test"] == 10 and counts["validation"] == round(50 * 0.05) and counts["train"] == 50 - round(50 * 0.05)
    assert set(first.loc[first["set"] == "test", "image_id"]) == {str(i) for i in range(10)}
    assert list(first["set"]) == list(again["set"])
    assert list(first["set"]) != list(other["set"])


def test_embedded_set_is_deterministic_and_readable(tmp_path):
    one = embedded.generate(tmp_path / "a", 6, seed=5, min_side=64, max_side=160)
    two = embedded.generate(tmp_path / "b", 6, seed=5, min_side=64, max_side=160)
    three = embedded.generate(tmp_path / "c", 6, seed=6, min_side=64, max_side=160)
    assert embedded.manifest_digest(one) == embedded.manifest_digest(two) != embedded.manifest_digest(three)
    metadata, unreadable, problems = data.build_metadata(one, seed=0, progress=False)
    assert len(metadata) == 6 and metadata[["width", "height"]].max().max() <= 160
    assert set(unreadable["reason"].str.split(":").str[0]) == {"file missing", "unreadable"}  # the planted problem cases
    assert len(problems) == 2
    assert "not human ratings" in (one / "DATA_CARD.md").read_text().lower()
    assert (metadata["n_votes"] > 150).all()
