"""The AVA reader (the embedded generator's own tests are in test_embedded.py)."""
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO
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
    }, test_ids=["1"])
    metadata, unreadable, _ = data.read_ava(tmp_path, seed=0, validation_fraction=0.5, progress=False)
    assert sorted(metadata["image_id"]) == ["1", "2", "3", "4", "5"]
    reasons = dict(zip(unreadable["image_id"], unreadable["reason"]))
    assert reasons["6"] == "file missing" and "truncated" in reasons["7"].lower() and "too small" in reasons["8"] and "unreadable" in reasons["9"]
    assert list(metadata.columns) == data.METADATA_COLUMNS
    for image_id in ("2", "3", "4", "5"):  # CMYK, alpha PNG, grayscale, palette -> RGB
        image = data.load_rgb(tmp_path / "images" / f"{image_id}.jpg")
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert tuple(data.load_rgb(tmp_path / "images" / "3.jpg")[0, 0]) == (255, 255, 255)  # transparent -> white


def test_a_fifo_or_device_named_like_an_image_is_reported_not_waited_on(tmp_path, no_hang):
    import os

    make_ava(tmp_path, {"1": rgb(), "2": rgb(), "3": rgb(), "4": rgb(), "5": os.mkfifo, "6": lambda p: p.symlink_to("/dev/zero")}, test_ids=["1"])
    no_hang(tmp_path / "images" / "5.jpg")
    metadata, unreadable, _ = data.read_ava(tmp_path, seed=0, validation_fraction=0.5, progress=False, workers=2)
    assert sorted(metadata["image_id"]) == ["1", "2", "3", "4"]
    assert dict(zip(unreadable["image_id"], unreadable["reason"])) == {
        "5": "unreadable: a named pipe (FIFO), not a regular file",
        "6": "unreadable: a character device (through a symbolic link to /dev/zero), not a regular file",
    }


def test_an_ava_txt_that_is_a_fifo_or_a_folder_is_one_error_naming_it(tmp_path, no_hang):
    import os

    os.mkfifo(tmp_path / "AVA.txt")
    no_hang(tmp_path / "AVA.txt")
    with pytest.raises(ValueError, match=r"AVA.txt: the AVA.txt is a named pipe \(FIFO\), not a regular file$"):
        data.parse_ava_txt(tmp_path / "AVA.txt")
    (tmp_path / "generic_test.jpgl").mkdir()
    with pytest.raises(ValueError, match=r"generic_test.jpgl: the test list is a directory, not a regular file$"):
        data.read_test_list(tmp_path / "generic_test.jpgl")


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


def votes_row(index, image_id, votes="1 1 1 1 1 1 1 1 1 1", tail="0 0 1"):
    return f"{index} {image_id} {votes} {tail}"


def rejected(problems):
    return {problem.line: problem.reason for problem in problems}


def test_rows_with_any_other_number_of_fields_are_rejected_not_shifted(tmp_path):
    rows = [
        votes_row(1, "1001"),
        votes_row(2, "1002", tail="0 0"),  # 14 fields
        votes_row(3, "1003", tail="0 0 1 7"),  # 16 fields: once read with shifted columns
        "4 1004 1 2 3 4 5 6 7 8 9 10",  # 12 fields, the old minimum
        votes_row(5, "1005"),
    ]
    (tmp_path / "AVA.txt").write_text("\n".join(rows) + "\n")
    table, problems = data.parse_ava_txt(tmp_path / "AVA.txt")
    assert list(table["image_id"]) == ["1001", "1005"]
    reasons = rejected(problems)
    assert sorted(reasons) == [2, 3, 4]
    assert "expected 15 fields" in reasons[2] and "found 14" in reasons[2]
    assert "found 16" in reasons[3] and "found 12" in reasons[4]
    assert {problem.image_id for problem in problems} == {"1002", "1003", "1004"}
    assert {problem.kind for problem in problems} == {data.AVA_ROW}


def test_bom_crlf_tabs_and_trailing_whitespace_are_read(tmp_path):
    rows = [votes_row(1, "1001", votes="0 0 1 2 3 4 0 0 0 0"), "", "2\t1002\t" + "\t".join(["3"] * 10) + "\t0\t0\t9  \t", votes_row(3, "1003", tail="0 0 1   ")]
    (tmp_path / "AVA.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    table, problems = data.parse_ava_txt(tmp_path / "AVA.txt")
    assert problems == []
    assert list(table["image_id"]) == ["1001", "1002", "1003"]  # the BOM is not part of the first field
    assert table.iloc[0]["mos"] == pytest.approx(5.0) and table.iloc[1]["n_votes"] == 30


def test_lines_are_numbered_as_an_editor_shows_them_whatever_the_line_ends(tmp_path):
    for ending in ("\n", "\r\n", "\r"):
        path = tmp_path / f"AVA{len(ending)}{ord(ending[0])}.txt"
        path.write_bytes(ending.join([votes_row(1, "1"), "", votes_row(3, "3", tail="0"), votes_row(4, "4")]).encode())
        table, problems = data.parse_ava_txt(path)
        assert list(table["image_id"]) == ["1", "4"] and [problem.line for problem in problems] == [3], repr(ending)


def test_a_header_line_is_reported_and_skipped(tmp_path):
    (tmp_path / "AVA.txt").write_text(data.AVA_FORMAT.replace("...", "c2 c3 c4 c5 c6 c7 c8 c9") + "\n" + votes_row(1, "1001") + "\n")
    table, problems = data.parse_ava_txt(tmp_path / "AVA.txt")
    assert list(table["image_id"]) == ["1001"]
    assert [(problem.line, problem.image_id) for problem in problems] == [(1, None)] and "header" in problems[0].reason


def test_each_non_integer_field_is_named(tmp_path):
    rows = [
        votes_row("x", "1001"),
        votes_row(2, "1002", votes="1 1 1 -1 1 1 1 1 1 1"),
        votes_row(3, "1003", votes="1 1 1 1.5 1 1 1 1 1 +1"),
        votes_row(4, "1004", tail="0 tag 1"),
        votes_row(5, "1005", tail="0 0 ٣"),  # int() would take this Arabic-Indic digit
        votes_row(6, "1006", votes="1 1 1 1 1 1 1 1 1 1_0"),  # and this
        votes_row(7, "1007", votes="1 1 1 1 1 1 1 1 1 9999999999"),
        votes_row(8, "1008"),
    ]
    (tmp_path / "AVA.txt").write_text("\n".join(rows) + "\n")
    table, problems = data.parse_ava_txt(tmp_path / "AVA.txt")
    assert list(table["image_id"]) == ["1008"]
    reasons = rejected(problems)
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7]
    assert "index='x'" in reasons[1] and "c4='-1'" in reasons[2]
    assert "c4='1.5'" in reasons[3] and "c10='+1'" in reasons[3] and "c1=" not in reasons[3]
    assert "tag2='tag'" in reasons[4] and "challenge_id=" in reasons[5] and "c10='1_0'" in reasons[6] and "c10=" in reasons[7]


def test_ids_that_are_not_plain_file_names_are_rejected(tmp_path):
    bad_ids = ["../1001", "a/b", "a\\b", "..", "12.jpg", "x:y", "é1"]
    rows = [votes_row(index, image_id) for index, image_id in enumerate(bad_ids, start=1)] + [votes_row(8, "000123"), votes_row(9, "AB_c-9")]
    (tmp_path / "AVA.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    table, problems = data.parse_ava_txt(tmp_path / "AVA.txt")
    assert list(table["image_id"]) == ["000123", "AB_c-9"]
    assert [problem.image_id for problem in problems] == bad_ids and all("plain name" in problem.reason for problem in problems)


def test_a_line_that_is_not_utf8_is_reported_and_the_rest_kept(tmp_path):
    content = (votes_row(1, "1001") + "\n").encode() + b"2 10\xe902 1 1 1 1 1 1 1 1 1 1 0 0 1\n" + (votes_row(3, "1003") + "\n").encode()
    (tmp_path / "AVA.txt").write_bytes(content)
    table, problems = data.parse_ava_txt(tmp_path / "AVA.txt")
    assert list(table["image_id"]) == ["1001", "1003"]
    assert [problem.line for problem in problems] == [2] and "not UTF-8" in problems[0].reason and "0xe9" in problems[0].reason


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_utf16_or_utf32_file_is_one_clear_error(tmp_path, encoding):
    (tmp_path / "AVA.txt").write_text(votes_row(1, "1001") + "\n", encoding=encoding)
    with pytest.raises(ValueError, match=rf"AVA.txt.*{encoding.upper()}.*UTF-8"):
        data.parse_ava_txt(tmp_path / "AVA.txt")
    (tmp_path / "generic_test.jpgl").write_text("1001\n", encoding=encoding)
    with pytest.raises(ValueError, match=r"generic_test.jpgl.*test list"):
        data.read_test_list(tmp_path / "generic_test.jpgl")


def test_missing_files_name_their_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="AVA.txt"):
        data.parse_ava_txt(tmp_path / "AVA.txt")
    with pytest.raises(FileNotFoundError, match="generic_test.jpgl"):
        data.read_test_list(tmp_path / "generic_test.jpgl")


MESSY_TEST_LIST = b"\xef\xbb\xbf  3 \r\n\r\n4.jpg\r\n\t\r\n777\r\n3\r\n5 6\r\n../7\r\n 8\t\r\n"  # BOM, CRLF, spaces, blanks


def test_the_test_list_tolerates_layout_and_reports_the_rest(tmp_path):
    (tmp_path / "generic_test.jpgl").write_bytes(MESSY_TEST_LIST)
    ids, problems = data.read_test_list(tmp_path / "generic_test.jpgl")
    assert ids == {"3": 1, "4": 3, "777": 5, "8": 9}  # id -> line number; ".jpg" dropped
    reasons = rejected(problems)
    assert sorted(reasons) == [6, 7, 8]
    assert "duplicate" in reasons[6] and "line 1" in reasons[6]
    assert "one image id per line" in reasons[7] and "plain name" in reasons[8]
    assert {problem.kind for problem in problems} == {data.TEST_LIST_LINE}


def test_listed_ids_absent_from_ava_and_missing_images_are_counted(tmp_path):
    make_ava(tmp_path, {str(i): rgb() for i in range(1, 9)} | {"9": None})  # 9 has no image file
    with open(tmp_path / "AVA.txt", "a") as handle:
        handle.write("10 8 1 1 1\n11 66 1 1 1\n")  # rejected rows: 8 also has a valid row, 66 has none
    (tmp_path / "generic_test.jpgl").write_bytes(MESSY_TEST_LIST + b"9\n66\n")  # valid ids: 3 4 777 8 9 66
    metadata, unreadable, problems = data.read_ava(tmp_path, seed=0, validation_fraction=0.5, verify_images=False, progress=False)
    absent = {problem.image_id: problem for problem in problems if problem.kind == data.TEST_ID_NOT_IN_AVA}
    assert sorted(absent) == ["66", "777"]
    assert (absent["777"].source, absent["777"].line, absent["777"].reason) == ("generic_test.jpgl", 5, "not in AVA.txt")
    assert "row (line 11) was rejected" in absent["66"].reason and "expected 15 fields" in absent["66"].reason
    counts = data.summarize(metadata, unreadable, problems)
    assert [counts[key] for key in ("test_ids_listed", "test_ids_in_ava", "test_ids_with_image_file", "test_images")] == [6, 4, 3, 3]
    assert counts["test_missing_files"] == counts["test_unreadable"] == 1 and counts["train_unreadable"] == counts["validation_unreadable"] == 0
    assert counts["test_list_rejected_lines"] == 3 and counts["malformed_rows"] == 2
    assert counts["images"] == len(metadata) == 8 and counts["unreadable"] == 1
    assert sum(counts[f"{name}_images"] for name in data.SETS) == counts["images"]
    table = data.problems_table(problems, data.TEST_LIST_LINE, data.TEST_ID_NOT_IN_AVA)
    assert list(table.columns) == data.PROBLEM_COLUMNS and len(table) == 5 and set(table["source"]) == {"generic_test.jpgl"}


def test_image_ids_stay_strings_through_every_csv(tmp_path):
    ids = ["000123", "1e5", "12345", "NA", "nan", "None", "007", "-1", "inf", "0x10"]
    make_ava(tmp_path / "ava", {image_id: rgb() for image_id in ids} | {"00": None}, test_ids=["000123", "1e5", "00"])
    metadata, unreadable, problems = data.build_metadata(tmp_path / "ava", seed=0, validation_fraction=0.5, verify_images=False, progress=False)
    metadata.to_csv(tmp_path / "metadata.csv", index=False)  # as notebook 00 writes it
    again = data.read_metadata(tmp_path / "metadata.csv")
    assert list(again["image_id"]) == ids and again["image_id"].map(type).eq(str).all()
    pd.testing.assert_frame_equal(again[data.VOTE_COLUMNS + ["set"]], metadata[data.VOTE_COLUMNS + ["set"]], check_dtype=False)
    unreadable.to_csv(tmp_path / "unreadable.csv", index=False, float_format="%.6g")  # as results.Run.save_table writes
    assert list(data.read_csv_with_ids(tmp_path / "unreadable.csv")["image_id"]) == ["00"]
    predictions = pd.DataFrame({"image_id": ids, "predicted": np.linspace(1, 10, len(ids)), "note": [np.nan] * len(ids)})
    predictions.to_csv(tmp_path / "predictions.csv", index=False, float_format="%.6g")
    read = data.read_csv_with_ids(tmp_path / "predictions.csv")
    assert list(read["image_id"]) == ids and read["note"].isna().all()  # other columns keep pandas' NA parsing


def test_csv_readers_name_the_file_and_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.csv.*notebook 00_data"):
        data.read_metadata(tmp_path / "metadata.csv")
    pd.DataFrame({"id": ["1"]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match="other.csv: no image_id column"):
        data.read_csv_with_ids(tmp_path / "other.csv")
    pd.DataFrame({"image_id": ["1"], "mos": [5.0]}).to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(ValueError, match="partial.csv.*lacks n_votes, mos_std, width, height, set$"):  # votes_k vary by format
        data.read_metadata(tmp_path / "partial.csv")


def never_read(path, **options):
    raise AssertionError(f"an image was read before the split was checked: {path}")


@pytest.mark.parametrize(
    ("n_images", "test_ids", "validation_fraction", "messages"),
    [
        (4, ["999"], 0.5, ["the test set is empty: none of the 1 ids listed in generic_test.jpgl has a valid row in AVA.txt (first: 999)"]),
        (4, [], 0.5, ["the test set is empty: generic_test.jpgl lists no valid image id"]),
        (4, ["0"], 0.05, ["the validation set is empty: 3 trainable images x validation_fraction 0.05 rounds to 0"]),
        (4, ["0"], 1.0, ["the train set is empty: validation_fraction 1 puts all 3 trainable images in validation"]),
        (2, ["0", "1"], 0.5, ["the train set is empty: all 2 valid rows of AVA.txt are in the test list", "the validation set is empty: 0 trainable"]),
        (0, ["0"], 0.5, ["the test set is empty", "the train set is empty: AVA.txt has no valid row", "the validation set is empty"]),
    ],
)
def test_an_empty_set_fails_before_any_image_is_read(tmp_path, monkeypatch, n_images, test_ids, validation_fraction, messages):
    make_ava(tmp_path, {str(i): rgb() for i in range(n_images)}, test_ids=test_ids)
    monkeypatch.setattr(data, "image_info", never_read)
    for function in (data.read_ava, data.build_metadata):
        with pytest.raises(data.EmptySetError) as caught:
            function(tmp_path, seed=0, validation_fraction=validation_fraction, progress=False)
        text = str(caught.value)
        assert all(message in text for message in messages), text
        named = {name for name in data.SETS if f"the {name} set" in text}
        assert named == {message.split()[1] for message in messages}  # only the empty sets are named


def test_an_empty_split_error_shows_the_first_rejected_lines(tmp_path):
    (tmp_path / "AVA.txt").write_text("1,1001,1,1,1,1,1,1,1,1,1,1,0,0,1\n")  # a comma-separated copy
    (tmp_path / "generic_test.jpgl").write_text("1001\n")
    with pytest.raises(data.EmptySetError, match=r"AVA.txt: 0 valid rows, 1 rejected.*AVA.txt line 1: expected 15 fields .*, found 1 \(commas\?") as caught:
        data.read_ava(tmp_path, seed=0, progress=False)
    assert [problem.line for problem in caught.value.problems if problem.kind == data.AVA_ROW] == [1]


def test_a_set_without_a_usable_image_fails_in_build_metadata_not_in_read_ava(tmp_path):
    make_ava(tmp_path, {"1": None, "2": rgb(size=(20, 20)), **{str(i): rgb() for i in range(3, 9)}}, test_ids=["1", "2"])
    metadata, unreadable, _ = data.read_ava(tmp_path, seed=0, validation_fraction=0.5, progress=False)
    assert (metadata["set"] != "test").all() and len(unreadable) == 2  # the reports survive to be saved
    with pytest.raises(data.EmptySetError, match=r"^the test set has no usable image: all 2 of its images are unusable \((file missing: 1, too small: 1|too small: 1, file missing: 1)\)"):
        data.check_sets(metadata, unreadable)
    with pytest.raises(data.EmptySetError, match="the test set has no usable image"):
        data.build_metadata(tmp_path, seed=0, validation_fraction=0.5, progress=False)


@pytest.mark.parametrize("validation_fraction", [-0.1, 1.5, float("nan")])
def test_a_validation_fraction_outside_0_1_is_named(tmp_path, validation_fraction):
    make_ava(tmp_path, {str(i): rgb() for i in range(4)}, test_ids=["0"])
    with pytest.raises(ValueError, match="validation_fraction must lie in"):
        data.read_ava(tmp_path, seed=0, validation_fraction=validation_fraction, progress=False)


def test_the_smoke_profile_split_has_usable_images_in_every_set(tmp_path):
    parameters = {}
    for name in ("common.yaml", "00_data.yaml"):
        parameters.update(yaml.safe_load((REPO / "params" / "smoke" / name).read_text()))
    ava = embedded.generate(tmp_path, parameters["embedded_images"], seed=parameters["seed"], min_side=parameters["embedded_min_side"], max_side=parameters["embedded_max_side"])
    metadata, _, _ = data.build_metadata(ava, seed=parameters["seed"], validation_fraction=parameters["validation_fraction"], progress=False)
    assert metadata["set"].value_counts().reindex(list(data.SETS), fill_value=0).min() >= 2


def test_the_one_regex_fast_path_accepts_exactly_what_the_field_checks_accept(tmp_path):
    valid = votes_row(1, "1001").split()
    variants = [valid]
    for position in range(len(valid)):
        for value in ("-1", "+1", "1.5", "٣", "1_0", "9999999999", "0x1", "a/b", "..", "", "00", "123456789"):
            variants.append(valid[:position] + [value] + valid[position + 1:])
    variants += [valid[:-1], valid + ["1"], valid[:2] + ["0"] * 10 + valid[12:]]
    for separator in (" ", "\t", " \u00a0", "\x1c"):
        texts = [separator.join(field for field in fields if field) for fields in variants]
        texts = [text.replace("1001", f"id{number}", 1) for number, text in enumerate(texts, start=1)]  # no duplicates
        (tmp_path / "AVA.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        table, problems = data.parse_ava_txt(tmp_path / "AVA.txt")
        accepted = {problem.line for problem in problems} ^ set(range(1, len(texts) + 1))
        expected = {number for number, text in enumerate(texts, start=1) if data._ava_row_problem(text.split()) is None}
        assert accepted == expected and len(table) == len(expected) > 20 and len(problems) > 100


def test_an_ava_txt_with_more_than_a_quarter_of_its_rows_rejected_stops_before_any_image_is_read(tmp_path, monkeypatch):
    make_ava(tmp_path, {str(i): rgb() for i in range(6)}, test_ids=["0"])
    good = (tmp_path / "AVA.txt").read_text()
    (tmp_path / "AVA.txt").write_text("index image_id c1 c2\n" + good + "".join(f"{7 + i},{200 + i},1,1,1,1,1,1,1,1,1,1,0,0,1\n" for i in range(3)))
    monkeypatch.setattr(data, "image_info", never_read)
    with pytest.raises(data.DataError, match=r"AVA.txt: 3 of its 9 rows were rejected, more than 25%: .*AVA.txt: index image_id c1 ... c10 .*First rejected: line 8: expected 15 fields") as caught:
        data.read_ava(tmp_path, seed=0, validation_fraction=0.5, progress=False)
    assert [problem.line for problem in caught.value.problems if problem.kind == data.AVA_ROW] == [1, 8, 9, 10]  # the header is reported, not counted
    (tmp_path / "AVA.txt").write_text(good + "7,200,1,1,1,1,1,1,1,1,1,1,0,0,1\n")  # 1 of 7: a bad row, reported
    monkeypatch.undo()
    _, _, problems = data.read_ava(tmp_path, seed=0, validation_fraction=0.5, progress=False)
    assert [problem.line for problem in problems if problem.kind == data.AVA_ROW] == [7]


def test_an_ava_images_folder_that_cannot_be_listed_is_one_error_naming_it(tmp_path, monkeypatch):
    import os

    make_ava(tmp_path, {str(i): rgb() for i in range(4)}, test_ids=["0"])
    scandir = os.scandir

    def denied(path="."):  # chmod 000 as seen by a user other than root (root reads whatever the mode)
        if str(path) == str(tmp_path / "images"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(data.DataError, match=r"images: ava_dir's images folder cannot be read \(Permission denied\)"):
        data.read_ava(tmp_path, seed=0, validation_fraction=0.5, progress=False)


def test_image_info_reports_a_folder_that_cannot_be_searched_as_unreadable_not_missing(tmp_path, monkeypatch):
    import pathlib

    rgb()(tmp_path / "a.jpg")
    stat = pathlib.Path.stat

    def denied(self, *args, **kwargs):
        if self.name == "a.jpg":
            raise PermissionError(13, "Permission denied", str(self))
        return stat(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", denied)
    assert data.image_info(tmp_path / "a.jpg") == (0, 0, "unreadable: Permission denied (a folder on its path cannot be searched: check its permissions)")
    monkeypatch.undo()
    assert data.image_info(tmp_path / "gone.jpg") == (0, 0, data.FILE_MISSING)
    assert data.image_info(tmp_path / "a.jpg" / "below.jpg") == (0, 0, data.FILE_MISSING)  # a file where a folder should be


def test_image_info_names_a_name_too_long_and_a_symbolic_link_loop_not_permissions(tmp_path):
    width, height, reason = data.image_info(tmp_path / ("x" * 300 + ".jpg"))
    assert (width, height) == (0, 0) and reason.startswith("unreadable: File name too long: the file name is too long")
    assert "permission" not in reason
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    width, height, reason = data.image_info(loop)
    assert reason.startswith("unreadable: Too many levels of symbolic links: ") and "permission" not in reason


def test_set_aside_keeps_a_completed_runs_outputs_and_drops_a_failed_runs_reports(tmp_path):
    metadata, report, absent = tmp_path / "metadata.csv", tmp_path / "malformed_rows.csv", tmp_path / "data.json"
    metadata.write_text("old metadata\n")
    report.write_text("old report\n")
    kept, removed = data.set_aside([metadata, report, absent], completed=metadata)
    assert kept == [tmp_path / "metadata.previous.csv", tmp_path / "malformed_rows.previous.csv"] and not removed
    assert (tmp_path / "metadata.previous.csv").read_text() == "old metadata\n" and not metadata.exists() and not report.exists()
    report.write_text("failed run's report\n")  # a second failure: no completed run's outputs to keep
    kept, removed = data.set_aside([metadata, report, absent], completed=metadata)
    assert not kept and removed == [report] and not report.exists()
    assert (tmp_path / "malformed_rows.previous.csv").read_text() == "old report\n"  # the completed run's, untouched


def test_an_ava_txt_that_cannot_be_read_is_named(tmp_path, monkeypatch):
    import pathlib

    make_ava(tmp_path, {"1": rgb()}, test_ids=["1"])
    read_bytes = pathlib.Path.read_bytes

    def denied(self):  # chmod 000 as seen by a user other than root
        if self.name == "AVA.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    with pytest.raises(PermissionError, match=r"AVA.txt: the AVA.txt cannot be read \(Permission denied\); check its permissions"):
        data.read_ava(tmp_path, seed=0, progress=False)
