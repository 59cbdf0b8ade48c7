"""Data sets other than AVA (mlsp.labels): KonIQ-10k's layout and a plain CSV, through notebook 00 into
the one metadata contract, with their score scale beside it; and each kind of bad input, named."""
import json
import shutil

import numpy as np
import pandas as pd
import papermill
import pytest

from conftest import REPO
from mlsp import data, embedded, experiments, extract, labels, metrics, train
from mlsp.parameters import ParameterError, list_notebooks, parse_overrides, resolve_profile
from mlsp.paths import RESULTS_DIR

KONIQ = data.FORMAT_SCALES["koniq10k"]
# The real file's header, quotes included (koniq10k_scores_and_distributions.csv)
KONIQ_HEADER = '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore"'
N_IMAGES = 24


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A small embedded set (real photos, simulated votes), whose images the formats below reuse."""
    folder = embedded.generate(tmp_path_factory.mktemp("embedded"), N_IMAGES, seed=0, min_side=96, max_side=160, problem_cases=False)
    table, _ = data.parse_ava_txt(folder / "AVA.txt")
    test_ids, _ = data.read_test_list(folder / "generic_test.jpgl")
    return {"folder": folder, "table": table, "test_ids": set(test_ids)}


def koniq_rows(table: pd.DataFrame) -> list[str]:
    """KonIQ-10k rows from AVA's 10-bin votes folded into 5 (scores 1-2 -> 1, ..., 9-10 -> 5)."""
    rows = []
    for _, row in table.iterrows():
        votes = row[data.VOTE_COLUMNS].to_numpy(dtype=int)
        counts = votes[0::2] + votes[1::2]
        scores = np.arange(1, 6)
        mos = counts @ scores / counts.sum()
        sd = np.sqrt(counts @ (scores - mos) ** 2 / counts.sum())
        rows.append(f"{row['image_id']}.jpg," + ",".join(map(str, counts)) + f",{counts.sum()},{mos:.9f},{sd:.9f},{(mos - 1) * 25:.6f}")
    return rows


def write_koniq(folder, source, extra_rows=()) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    labels_file = folder / "koniq10k_scores_and_distributions.csv"
    labels_file.write_text("\r\n".join([KONIQ_HEADER, *koniq_rows(source["table"]), *extra_rows]) + "\r\n")  # as published: CRLF
    return labels_file, source["folder"] / "images"


def write_plain_csv(folder, source) -> tuple:
    """image (relative to the embedded folder), mos on AVA's 1-10, votes_1 ... votes_10, and a set
    column naming train and test only (validation is then drawn from train)."""
    folder.mkdir(parents=True, exist_ok=True)
    table = source["table"]
    frame = pd.DataFrame({"image": "images/" + table["image_id"] + ".jpg", "mos": table["mos"].round(4)})
    frame[[f"votes_{k}" for k in range(1, 11)]] = table[data.VOTE_COLUMNS].to_numpy()
    frame["set"] = np.where(table["image_id"].isin(source["test_ids"]), "test", "train")
    labels_file = folder / "labels.csv"
    frame.to_csv(labels_file, index=False)
    return labels_file, source["folder"]


def run_notebook_00(tmp_path, name: str, **parameters) -> dict:
    """Notebook 00 through papermill with the given parameters; its outputs."""
    profile = f"test-data-formats-{name}"  # results/test*/ is git-ignored, and removed again below
    work = tmp_path / "work"
    try:
        papermill.execute_notebook(
            str(REPO / "notebooks" / "00_data.ipynb"), str(tmp_path / "00_data.ipynb"), cwd=str(REPO), kernel_name="python3", progress_bar=False,
            parameters={"profile": profile, "work_dir": str(work), "ava_dir": str(tmp_path / "ava"), "generate_embedded": False, "seed": 0, **parameters},
        )
        results = RESULTS_DIR / profile
        return {
            "work": work,
            "metadata": data.read_metadata(work / "metadata.csv"),
            "description": json.loads((work / "metadata.json").read_text()),
            "summary": json.loads((results / "data.json").read_text()),
            "malformed": pd.read_csv(results / "malformed_rows.csv"),
            "unreadable": data.read_csv_with_ids(results / "unreadable.csv"),
            "test_list_problems": (results / "test_list_problems.csv").exists(),
        }
    finally:
        shutil.rmtree(RESULTS_DIR / profile, ignore_errors=True)


@pytest.fixture(scope="module")
def koniq_run(source, tmp_path_factory):
    """Notebook 00 on a KonIQ-10k-layout set with three bad rows: a MOS that is not a number, a
    repeated image, and an image whose file is missing."""
    tmp_path = tmp_path_factory.mktemp("koniq")
    extra = ["broken.jpg,0,1,2,3,4,10,n/a,1.0,50", "100000.jpg,0,0,1,0,0,1,3.0,0,50", "absent.jpg,0,0,5,5,0,10,3.5,0.5,62.5"]
    labels_file, images_dir = write_koniq(tmp_path / "koniq", source, extra)
    run = run_notebook_00(tmp_path, "koniq10k", data_format="koniq10k", labels_file=str(labels_file), images_dir=str(images_dir), test_fraction=0.25, validation_fraction=0.2)
    return {**run, "labels_file": labels_file, "images_dir": images_dir}


@pytest.mark.slow
def test_koniq10k_through_notebook_00(koniq_run, source):
    metadata, table = koniq_run["metadata"], source["table"]
    assert list(metadata.columns) == ["image_id", "votes_1", "votes_2", "votes_3", "votes_4", "votes_5", "n_votes", "mos", "mos_std", "width", "height", "set", "path"]
    assert sorted(metadata["image_id"]) == sorted(table["image_id"] + ".jpg")  # KonIQ's names are the ids
    assert metadata["mos"].between(1, 5).all() and (metadata["n_votes"] == metadata[[f"votes_{k}" for k in range(1, 6)]].sum(axis=1)).all()
    assert all(path.is_file() and path.parent == koniq_run["images_dir"] for path in data.image_paths(metadata))
    counts = pd.concat([metadata["set"], koniq_run["unreadable"]["set"]]).value_counts()  # the file-less row was drawn too
    rows = N_IMAGES + 1
    assert counts["test"] == round(rows * 0.25) and counts["validation"] == round((rows - counts["test"]) * 0.2)  # drawn: no set column
    # the scale every later accuracy uses, recorded twice: for later notebooks, and in the data table
    assert data.score_scale(koniq_run["work"]) == data.ScoreScale(1, 5, 3) == KONIQ
    assert koniq_run["description"]["data_format"] == "koniq10k" and "drawn with seed 0" in koniq_run["description"]["split"]
    summary = koniq_run["summary"]["metrics"]
    assert (summary["score_min"], summary["score_max"], summary["accuracy_threshold"]) == (1, 5, 3)
    assert summary["high_quality_fraction"] == pytest.approx((metadata["mos"] > 3).mean())
    assert "test_ids_listed" not in summary and not koniq_run["test_list_problems"]  # AVA's test list only


@pytest.mark.slow
def test_koniq10k_bad_rows_and_missing_files_are_reported_with_line_and_column(koniq_run):
    malformed = koniq_run["malformed"]
    first_bad = N_IMAGES + 2  # the header is line 1
    assert list(malformed["line"]) == [first_bad, first_bad + 1]
    assert "column 'MOS' (8): 'n/a' is not a number" in malformed["reason"][0]
    assert "column 'image_name' (1): duplicate image (first at line 2, kept)" in malformed["reason"][1]
    assert set(malformed["source"]) == {"koniq10k_scores_and_distributions.csv"}
    unreadable = koniq_run["unreadable"]
    assert list(unreadable["image_id"]) == ["absent.jpg"] and list(unreadable["reason"]) == [data.FILE_MISSING]
    assert list(unreadable["line"]) == [first_bad + 2] and unreadable["path"][0].endswith("images/absent.jpg")


@pytest.mark.slow
def test_a_head_trains_on_koniq10k_metadata_and_scores_on_its_scale(koniq_run, tmp_path):
    """Notebook 01's extraction finds KonIQ's files by the path column, and a Table 2 row trains on them."""
    from mlsp import backbones

    metadata_csv = koniq_run["work"] / "metadata.csv"
    metadata = data.read_metadata(metadata_csv)
    row = experiments.TABLE2_FEATURE_ROWS[0]  # Single-3FC (-aug): rescaled, narrow, one view
    backbone = backbones.load("efficientnet_lite0", "imagenet")
    summaries = extract.run_extraction(metadata, None, backbone, tmp_path / "features", {row.mode: [row.kind]}, augmentation=(row.augment,), progress=False)
    assert summaries[0]["extracted"] == len(metadata) and not summaries[0]["skipped"]
    split = experiments.load_split(metadata_csv)
    protocol = train.Protocol(batch_size=8, max_epochs=3)
    result = experiments.run_feature_row(row, split, tmp_path / "features", "efficientnet_lite0", protocol, seed=0)
    assert len(result["predicted"]) == len(split.test) and np.isfinite(result["srcc"])
    assert split.scale == data.score_scale(metadata_csv.parent) == KONIQ and split.data_format == "koniq10k"
    # the row's own metrics are on KonIQ's scale: accuracy at MOS 3, out_of_range outside 1-5
    assert result["accuracy"] == metrics.accuracy(result["predicted"], result["true"], threshold=3)
    assert result["majority_accuracy"] == metrics.majority_accuracy(result["true"], threshold=3)
    assert result["out_of_range"] == metrics.out_of_range(result["predicted"], 1, 5)


@pytest.mark.slow
def test_plain_csv_through_notebook_00(source, tmp_path):
    labels_file, images_dir = write_plain_csv(tmp_path / "mine", source)
    run = run_notebook_00(tmp_path, "csv", data_format="csv", labels_file=str(labels_file), images_dir=str(images_dir), score_min=1.0, score_max=10.0, accuracy_threshold=5.5, validation_fraction=0.2)
    metadata = run["metadata"]
    assert list(metadata.columns) == data.METADATA_COLUMNS  # votes_1 ... votes_10 given, as AVA's
    assert sorted(metadata["image_id"]) == sorted("images/" + source["table"]["image_id"] + ".jpg")
    test = set(metadata.loc[metadata["set"] == "test", "image_id"])
    assert test == {f"images/{image_id}.jpg" for image_id in source["test_ids"]}  # the set column is kept
    trainable = N_IMAGES - len(test)
    assert (metadata["set"] == "validation").sum() == round(trainable * 0.2)  # drawn from its train rows
    assert "validation drawn from its train images" in run["description"]["split"]
    assert data.score_scale(run["work"]) == data.ScoreScale(1, 10, 5.5)
    np.testing.assert_allclose(metadata.sort_values("image_id")["mos"], source["table"].assign(image_id="images/" + source["table"]["image_id"] + ".jpg").sort_values("image_id")["mos"], atol=1e-4)
    assert run["malformed"].empty and run["unreadable"].empty


# ---- bad input, each named by file, line and column ---------------------------------------------


def write(tmp_path, text: str, name: str = "labels.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def rejected(tmp_path, text: str, data_format: str = "csv", scale=data.ScoreScale(1, 10, 5)) -> list[tuple[int, str]]:
    table, problems = labels.read_labels(write(tmp_path, text), data_format, scale)
    assert all(problem.kind == data.LABELS_ROW and problem.source == "labels.csv" for problem in problems)
    return [(problem.line, problem.reason) for problem in problems]


def test_a_missing_column_names_the_file_the_header_line_and_what_the_format_needs(tmp_path):
    with pytest.raises(ValueError, match=r"labels.csv, line 1: no column 'MOS' \(the header has: image_name, c1, score\); a koniq10k labels file has image_name, MOS"):
        labels.read_labels(write(tmp_path, "image_name,c1,score\na.jpg,1,3\n"), "koniq10k", KONIQ)
    with pytest.raises(ValueError, match=r"line 3: no column 'image'"):  # blank lines before the header are skipped
        labels.read_labels(write(tmp_path, "\n\nfile,mos\na.jpg,3\n"), "csv", KONIQ)
    with pytest.raises(ValueError, match=r"line 1: column 'MOS' appears twice \(columns 2 and 3\)"):
        labels.read_labels(write(tmp_path, "image,mos,MOS\na.jpg,3,3\n"), "csv", KONIQ)
    with pytest.raises(ValueError, match=r"vote columns must count the scores 1 to K without gaps, found votes_1, votes_3"):
        labels.read_labels(write(tmp_path, "image,mos,votes_1,votes_3\na.jpg,3,1,1\n"), "csv", KONIQ)
    with pytest.raises(ValueError, match=r"labels.csv: empty"):
        labels.read_labels(write(tmp_path, "\n \n"), "csv", KONIQ)


def test_a_mos_that_is_not_a_number_is_rejected_with_its_line_and_column(tmp_path):
    found = rejected(tmp_path, "image,mos\na.jpg,5\nb.jpg,\nc.jpg,nan\nd.jpg,1_0\ne.jpg,inf\nf.jpg, 4.5 \n")
    assert [line for line, _ in found] == [3, 4, 5, 6]  # "nan", "inf" and "1_0" are no scores, though float() takes them
    assert found[1] == (4, "column 'mos' (2): 'nan' is not a number")


def test_a_mos_outside_the_scale_is_rejected_and_a_scale_no_row_fits_is_one_error(tmp_path):
    found = rejected(tmp_path, "image_name,MOS\na.jpg,3.2\nb.jpg,77.4\nc.jpg,0.99\n", "koniq10k", KONIQ)
    assert found == [(3, "column 'MOS' (2): 77.4 lies outside the score scale 1-5 (score_min, score_max)"), (4, "column 'MOS' (2): 0.99 lies outside the score scale 1-5 (score_min, score_max)")]
    # KonIQ's sets file carries MOS on 0-100: read with the 1-5 scale, no row fits; the parameters are wrong
    with pytest.raises(ValueError, match=r"labels.csv: no MOS lies inside the stated scale 1-5; the file's run from 15.2 to 77.4: set score_min, score_max and accuracy_threshold"):
        labels.read_labels(write(tmp_path, "image_name,MOS\na.jpg,77.4\nb.jpg,15.2\n"), "koniq10k", KONIQ)


def test_duplicate_images_keep_the_first_row_also_when_written_differently(tmp_path):
    found = rejected(tmp_path, "image,mos\nsub/a.jpg,5\n./sub/a.jpg,6\nsub\\a.jpg,7\nsub/b.jpg,4\n")
    assert found == [(3, "column 'image' (1): duplicate image (first at line 2, kept)"), (4, "column 'image' (1): duplicate image (first at line 2, kept)")]


def test_unknown_set_names_empty_and_absolute_images_and_bad_votes_are_rejected(tmp_path):
    text = "image,mos,votes_1,votes_2,set\na.jpg,5,1,2,train\nb.jpg,5,1,2,holdout\nc.jpg,5,1,2,\n/abs/d.jpg,5,1,2,test\n,5,1,2,test\nf.jpg,5,1,-2,test\ng.jpg,5,1.5,2,test\nh.jpg,5,1,2,Training\ni.jpg,5,1,2\n"
    found = dict(rejected(tmp_path, text))
    assert found[3] == "column 'set' (5): 'holdout' is not a set name (train, training, validation, val, test)"
    assert found[4].startswith("column 'set' (5): '' is not a set name")
    assert found[5] == "column 'image' (1): '/abs/d.jpg' is an absolute path; give it relative to images_dir"
    assert found[6] == "column 'image' (1): empty"
    assert found[7] == "column 'votes_2' (4): '-2' is not a number of votes"
    assert found[8] == "columns votes_1 ... votes_2 (3-4): 1.5, 2 are not whole vote counts"
    assert found[10] == "expected 5 fields as in the header, found 4"
    assert 9 not in found  # set names are read whatever their case


def test_koniq_sets_file_fractions_become_vote_counts_and_its_split_is_kept(tmp_path):
    text = "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set\na.jpg,0.0,0.0,0.238095238095,0.695238095238,0.0666666666667,105,77.38,0.527,training\nb.jpg,0.5,0.2,0.0,0.0,0.0,10,20,0.5,test\n"
    table, problems = labels.read_labels(write(tmp_path, text), "koniq10k", data.ScoreScale(0, 100, 50))
    assert table.loc[0, [f"votes_{k}" for k in range(1, 6)]].tolist() == [0, 0, 25, 73, 7] and table.loc[0, "n_votes"] == 105
    assert list(table["set"]) == ["train"]
    assert problems[0].line == 3 and "neither whole vote counts nor fractions of c_total summing to 1 (they sum to 0.7)" in problems[0].reason


def test_text_that_is_not_utf8_names_line_and_column_and_utf16_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"labels.csv, line 3, column 4: not UTF-8 text \(byte 0xe9\)"):
        labels.read_labels(write(tmp_path, "image,mos\na.jpg,5\ncaf\u00e9.jpg,5\n", encoding="latin-1"), "csv", KONIQ)
    with pytest.raises(ValueError, match=r"labels.csv: the labels file is UTF-16 text"):
        labels.read_labels(write(tmp_path, "image,mos\na.jpg,5\n", encoding="utf-16"), "csv", KONIQ)
    table, _ = labels.read_labels(write(tmp_path, "\ufeffimage;mos\r\nsous-bois/caf\u00e9.jpg;3.5\r\n"), "csv", KONIQ)
    assert list(table["image_id"]) == ["sous-bois/caf\u00e9.jpg"] and table["mos"][0] == 3.5  # BOM, CRLF, semicolons


def test_plain_csv_without_votes_has_empty_vote_counts(tmp_path):
    table, problems = labels.read_labels(write(tmp_path, "image,mos\na.jpg,5\nb.jpg,6.5\n"), "csv", data.ScoreScale(1, 10, 5))
    assert not problems and list(table.columns) == ["image_id", "n_votes", "mos", "mos_std", "set", "line"]
    assert table["n_votes"].isna().all() and table["mos_std"].isna().all() and table["set"].isna().all()


def make_images(folder, names):
    from PIL import Image

    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (120, 80, 40)).save(folder / name)


def test_read_labelled_draws_the_split_with_the_seed_and_reports_missing_files(tmp_path):
    names = [f"p{index}.png" for index in range(20)]
    make_images(tmp_path / "images", names[:-1])  # the last one has no file
    labels_file = write(tmp_path, "image,mos\n" + "".join(f"{name},{1 + index % 9}\n" for index, name in enumerate(names)))
    first = labels.read_labelled("csv", labels_file, tmp_path / "images", data.ScoreScale(1, 10, 5), seed=3, test_fraction=0.2, validation_fraction=0.25, progress=False)
    again = labels.read_labelled("csv", labels_file, tmp_path / "images", data.ScoreScale(1, 10, 5), seed=3, test_fraction=0.2, validation_fraction=0.25, progress=False)
    metadata, unreadable, problems, how = first
    pd.testing.assert_frame_equal(metadata, again[0])  # the seed fixes the split
    sets = pd.concat([metadata["set"], unreadable["set"]]).value_counts()
    assert (sets["test"], sets["validation"], sets["train"]) == (4, 4, 12) and not problems
    assert list(unreadable["image_id"]) == ["p19.png"] and unreadable["line"][0] == 21 and unreadable["reason"][0] == data.FILE_MISSING
    assert (metadata["width"] == 64).all() and "drawn with seed 3" in how
    other = labels.read_labelled("csv", labels_file, tmp_path / "images", data.ScoreScale(1, 10, 5), seed=4, test_fraction=0.2, validation_fraction=0.25, progress=False)[0]
    assert list(other["set"]) != list(metadata["set"])


def never_read(path, **options):
    raise AssertionError(f"an image was read before the split was checked: {path}")


@pytest.mark.parametrize(
    ("text", "test_fraction", "messages"),
    [
        ("image,mos\na.jpg,5\nb.jpg,5\nc.jpg,5\n", 0.1, ["the test set is empty: 3 usable rows x test_fraction 0.1 rounds to 0"]),
        ("image,mos,set\na.jpg,5,train\nb.jpg,5,train\nc.jpg,5,validation\n", 0.2, ["the test set is empty: no usable row of labels.csv has set 'test'"]),
        ("image,mos\na.jpg,x\n", 0.2, ["the train set is empty: labels.csv has no usable row", "(labels.csv: 0 usable rows, 1 rejected; split: drawn with seed 0", "First rejected rows: line 2: column 'mos' (2): 'x' is not a number"]),
    ],
)
def test_an_empty_set_fails_before_any_image_is_read(tmp_path, monkeypatch, text, test_fraction, messages):
    (tmp_path / "images").mkdir()
    monkeypatch.setattr(data, "image_info", never_read)
    with pytest.raises(data.EmptySetError) as caught:
        labels.read_labelled("csv", write(tmp_path, text), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, test_fraction=test_fraction, validation_fraction=0.5, progress=False)
    assert all(message in str(caught.value) for message in messages), str(caught.value)


def test_missing_labels_file_or_images_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope: images_dir not found"):
        labels.read_labelled("csv", tmp_path / "labels.csv", tmp_path / "nope", KONIQ, seed=0)
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="labels.csv: labels_file not found"):
        labels.read_labelled("csv", tmp_path / "labels.csv", tmp_path / "images", KONIQ, seed=0)


# ---- the score scale and the format parameters --------------------------------------------------


def test_each_format_has_its_scale_and_a_csv_must_state_one():
    assert data.resolve_scale("ava") == data.ScoreScale(1, 10, 5)
    assert data.resolve_scale("ava", accuracy_threshold=6) == data.ScoreScale(1, 10, 6)  # AVA's threshold may move
    assert data.resolve_scale("koniq10k") == data.ScoreScale(1, 5, 3)
    assert data.resolve_scale("koniq10k", 0, 100, 50) == data.ScoreScale(0, 100, 50)
    with pytest.raises(ValueError, match="AVA's MOS is a mean of votes 1 to 10"):
        data.resolve_scale("ava", score_max=5)
    with pytest.raises(ValueError, match="give accuracy_threshold on your scale too"):
        data.resolve_scale("koniq10k", score_max=100)
    with pytest.raises(ValueError, match="data_format 'csv' has no scale of its own: give score_min, accuracy_threshold"):
        data.resolve_scale("csv", score_max=10)
    with pytest.raises(ValueError, match="score_min < accuracy_threshold < score_max, got 1, 5, 5"):
        data.ScoreScale(1, 5, 5)
    with pytest.raises(ValueError, match="data_format must be one of ava, koniq10k, csv, got 'tid2013'"):
        data.resolve_scale("tid2013")


def test_sources_must_fit_the_format():
    data.check_sources("ava", True, None, None)
    data.check_sources("csv", False, "labels.csv", "images")
    with pytest.raises(ValueError, match="labels_file would be ignored"):
        data.check_sources("ava", False, "labels.csv", None)
    with pytest.raises(ValueError, match="data_format 'koniq10k' needs images_dir"):
        data.check_sources("koniq10k", False, "scores.csv", None)
    with pytest.raises(ValueError, match="generate_embedded writes the embedded set in AVA's layout"):
        data.check_sources("csv", True, "labels.csv", "images")


def koniq_split(tmp_path, n: int = 20) -> experiments.Split:
    """A KonIQ-10k-format metadata.csv (MOS 1-5, images in a subfolder, a path column) with its
    metadata.json, read back as notebooks 02-05 read it."""
    rng = np.random.default_rng(0)
    names = [f"sub{index % 2}/k{index}.jpg" for index in range(n)]
    metadata = pd.DataFrame({
        "image_id": names, "n_votes": 100, "mos": np.round(rng.uniform(1.2, 4.8, n), 3), "mos_std": 0.5,
        "width": rng.integers(300, 900, n), "height": rng.integers(300, 900, n),
        "set": ["train"] * (n - 8) + ["validation"] * 2 + ["test"] * 6, "path": [f"data/koniq/{name}" for name in names],
    })
    metadata.to_csv(tmp_path / "metadata.csv", index=False)
    data.write_description(tmp_path, "koniq10k", KONIQ, source="test")
    return experiments.load_split(tmp_path / "metadata.csv")


def test_a_koniq10k_split_evaluates_at_its_threshold_and_counts_out_of_range_on_its_scale(tmp_path):
    split = koniq_split(tmp_path)
    assert split.scale == KONIQ and split.data_format == "koniq10k"
    true = split.mos[split.test]
    predicted = np.array([2.9, 3.1, 5.4, 0.8, 4.0, 2.0])  # two outside 1-5, none outside AVA's 1-10 but 0.8
    found = experiments.evaluate(predicted, split, seed=0)
    assert found["accuracy"] == metrics.accuracy(predicted, true, threshold=3) and found["majority_accuracy"] == metrics.majority_accuracy(true, threshold=3)
    assert found["out_of_range"] == 2 and metrics.evaluate(predicted, true, seed=0)["out_of_range"] == 1
    assert (found["accuracy_low"], found["accuracy_high"]) == metrics.interval("accuracy", predicted, true, seed=0, threshold=3)
    assert "koniq10k data: MOS on 1-5, accuracy at MOS > 3" in experiments.scale_sentence(split)
    # the paper's numbers are AVA's: the columns stay, empty
    result = {"label": "Single-3FC", "backbone": "b", "weights": "w", "epochs": 1, "seed": 0, "predicted": predicted, "true": true, **found}
    table = experiments.results_table([result], experiments.published_for(split, {"Single-3FC": (0.676, 0.682, 79.3)}))
    assert table[["paper_srcc", "diff_srcc", "paper_accuracy"]].isna().all(axis=None)
    assert experiments.published_for(experiments.Split(split.metadata, split.train, split.validation, split.test), {"a": 1}) == {"a": 1}  # AVA's
    # predictions carry each image's file, so notebook 06 finds it in any layout
    assert list(experiments.predictions_table(result, split)["path"]) == list(split.metadata["path"].iloc[split.test])
    assert list(experiments.row_predictions([result], split)["path"]) == list(split.metadata["path"].iloc[split.test])


def test_usable_split_keeps_the_scale_and_avas_stays_the_default(tmp_path):
    split = koniq_split(tmp_path)
    (tmp_path / "metadata.json").unlink()  # metadata from before metadata.json: AVA's
    old = experiments.load_split(tmp_path / "metadata.csv")
    assert old.scale == data.FORMAT_SCALES["ava"] and old.data_format == "ava" and data.data_format(tmp_path) == "ava"
    restricted, _ = experiments.usable_split(tmp_path / "metadata.csv", [])
    assert restricted.scale == data.FORMAT_SCALES["ava"]
    data.write_description(tmp_path, "csv", data.ScoreScale(0, 100, 60), source="test")
    restricted, _ = experiments.usable_split(tmp_path / "metadata.csv", [])
    assert restricted.scale == data.ScoreScale(0, 100, 60) and restricted.data_format == "csv"
    assert list(restricted.test) == list(split.test)


def test_the_resolution_baseline_labels_high_quality_at_the_splits_threshold(tmp_path):
    from mlsp import resolution

    split = koniq_split(tmp_path, n=40)
    outcome = resolution.run(split, seed=0, epochs=2)
    true = split.mos[split.test]
    assert outcome["majority_accuracy"] == metrics.majority_accuracy(true, threshold=3) != metrics.majority_accuracy(true)
    assert resolution.summary_table(outcome, experiments.published_for(split, {"network_accuracy": 72.4}))["paper (AVA)"].isna().all()


def test_the_data_figure_marks_the_threshold_and_survives_labels_without_votes():
    from mlsp import report

    metadata = pd.DataFrame({"mos": [1.5, 3.2, 4.1], "n_votes": [np.nan] * 3, "width": [64] * 3, "height": [48] * 3, "set": ["train", "validation", "test"]})
    figure = report.data_overview(metadata, threshold=3)
    assert list(figure.axes[0].lines[0].get_xdata()) == [3, 3]
    assert figure.axes[1].texts[0].get_text() == "not given by the labels file"
    assert figure.axes[2].get_xscale() == figure.axes[2].get_yscale() == "linear"


def test_the_data_figure_turns_to_log_axes_when_a_panorama_would_squash_the_other_sizes():
    from mlsp import report

    sizes = {"width": [800, 640, 533, 30000], "height": [600, 480, 800, 4000]}  # the rehearsal's panorama
    metadata = pd.DataFrame({"mos": [4.0, 5.0, 6.0, 5.5], "n_votes": [200] * 4, **sizes, "set": ["train", "train", "validation", "test"]})
    figure = report.data_overview(metadata)
    assert figure.axes[2].get_xscale() == figure.axes[2].get_yscale() == "log"
    assert "log axes" in figure.axes[2].get_title()
    assert report.squashing_outlier(pd.Series([800, 640, 533, 3000]))  # 4.2 times the median 720
    assert not report.squashing_outlier(pd.Series([800, 640, 533, 2800]))  # 3.9 times


def test_score_scale_reads_what_notebook_00_wrote_and_older_metadata_is_avas(tmp_path):
    assert data.score_scale(tmp_path) == data.FORMAT_SCALES["ava"]  # metadata from before metadata.json
    data.write_description(tmp_path, "koniq10k", KONIQ, source="somewhere")
    assert data.score_scale(tmp_path) == KONIQ
    (tmp_path / "metadata.json").write_text('{"score_min": 1, "score_max": 5}')
    with pytest.raises(ValueError, match=r"metadata.json: no accuracy_threshold; rerun notebook 00_data"):
        data.score_scale(tmp_path)


def test_image_paths_come_from_the_path_column_or_avas_layout(tmp_path):
    with_path = pd.DataFrame({"image_id": ["a.jpg"], "path": ["data/x/a.jpg"]})
    assert data.image_paths(with_path, ava_dir=tmp_path) == [REPO / "data/x/a.jpg"]  # the path column wins
    old = pd.DataFrame({"image_id": ["123"]})
    assert data.image_paths(old, ava_dir=tmp_path) == [tmp_path / "images" / "123.jpg"]
    with pytest.raises(ValueError, match="no path column"):
        data.image_paths(old)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["data_format=tid2013"], "key 'data_format' should be one of the data formats: ava, koniq10k, csv, got 'tid2013'"),
        (["score_min=5", "score_max=1"], "--set: key 'score_min' should be < score_max (1, from --set), got 5"),
        (["accuracy_threshold=9"], "key 'accuracy_threshold' should be < score_max (5, from"),
        (["score_min=abc"], "key 'score_min' should be a finite number, got 'abc'"),
        (["test_fraction=1"], "key 'test_fraction' should be a number in (0, 1), got 1"),
    ],
)
def test_format_parameters_are_checked_before_any_notebook_starts(pairs, message):
    with pytest.raises(ParameterError) as refused:
        resolve_profile("custom", list_notebooks(), overrides=parse_overrides(pairs))
    assert message in str(refused.value)


def test_the_custom_profile_template_resolves_without_its_data_and_its_dry_run_names_what_is_missing(capsys, tmp_path):
    from mlsp import cli

    resolved = resolve_profile("custom", list_notebooks())  # its labels file is the user's to provide
    assert resolved["00_data"]["data_format"] == "koniq10k"
    assert data.resolve_scale("koniq10k", *(resolved["00_data"][key] for key in ("score_min", "score_max", "accuracy_threshold"))) == KONIQ
    assert cli.main(["run", "--profile", "custom", "--dry-run"]) == 2  # the dry run of the notebooks to run checks their inputs
    message = capsys.readouterr().err
    assert "00_data.ipynb: key 'labels_file': no such file: " in message and "data/koniq10k/koniq10k_scores_and_distributions.csv" in message
    assert "key 'images_dir': no such folder: " in message and message.count("\n") == 1
    assert cli.main(["run", "--profile", "custom", "--dry-run", "--only", "02"]) == 0  # notebook 00 not run: its inputs are not needed
    labels_file = write(tmp_path, "image_name,MOS\na.jpg,3\n")
    assert cli.main(["run", "--profile", "custom", "--dry-run", "--set", f"labels_file={labels_file}", "--set", f"images_dir={tmp_path}"]) == 0
    assert cli.main(["run", "--profile", "custom", "--dry-run", "--set", f"labels_file={tmp_path}", "--set", f"images_dir={labels_file}"]) == 2
    message = capsys.readouterr().err
    assert f"key 'labels_file': no such file: {tmp_path} (it is a folder); key 'images_dir': no such folder: {labels_file} (it is a file)" in message


@pytest.mark.parametrize(
    ("profile", "pairs", "message"),
    [
        ("paper", ["labels_file=labels.csv"], "--set: data_format 'ava' reads ava_dir (AVA.txt, generic_test.jpgl, images/); labels_file would be ignored: unset it"),
        ("custom", ["data_format=ava"], "--set: data_format 'ava' reads ava_dir (AVA.txt, generic_test.jpgl, images/); labels_file and images_dir would be ignored"),
        ("paper", ["data_format=csv"], "--set: data_format 'csv' needs labels_file and images_dir"),
        ("paper", ["data_format=csv", "labels_file=a.csv", "images_dir=images"], "--set: data_format 'csv' has no scale of its own: give score_min, score_max, accuracy_threshold"),
        ("custom", ["data_format=csv", "score_min=null"], "--set: data_format 'csv' has no scale of its own: give score_min"),
        ("custom", ["generate_embedded=true"], "--set: generate_embedded writes the embedded set in AVA's layout; with data_format 'koniq10k' set generate_embedded: false"),
        ("paper", ["score_max=5", "accuracy_threshold=3"], "--set: AVA's MOS is a mean of votes 1 to 10"),
    ],
)
def test_format_parameters_that_contradict_each_other_are_refused_before_any_notebook_starts(profile, pairs, message):
    with pytest.raises(ParameterError) as refused:
        resolve_profile(profile, list_notebooks(), overrides=parse_overrides(pairs))
    assert message in str(refused.value)


def test_a_contradiction_is_blamed_on_the_file_that_made_it(tmp_path):
    shutil.copytree(REPO / "params" / "custom", tmp_path / "custom")
    own = tmp_path / "custom" / "00_data.yaml"
    own.write_text(own.read_text().replace("data_format: koniq10k", "data_format: ava"))
    with pytest.raises(ParameterError, match=r"custom/00_data.yaml: data_format 'ava' reads ava_dir"):
        resolve_profile("custom", list_notebooks(), tmp_path)


# ---- decimal commas, a file read in the wrong layout, Excel's empty columns, aliases, names -------


def test_decimal_commas_are_read_in_a_semicolon_file_in_every_numeric_column(tmp_path):
    table, problems = labels.read_labels(write(tmp_path, "image;mos;votes_1;votes_2\na.jpg;1,5;3;1\nb.jpg;7,25;0;2\nc.jpg;6.5;1;1\n"), "csv", data.ScoreScale(1, 10, 5))
    assert not problems and list(table["mos"]) == [1.5, 7.25, 6.5]  # a dot still reads
    koniq = "image_name;c1;c2;c3;c4;c5;c_total;MOS;SD\na.jpg;0;1;2;1;0;4;3,0;0,707\n"
    table, problems = labels.read_labels(write(tmp_path, koniq), "koniq10k", KONIQ)
    assert not problems and table["mos"][0] == 3.0 and table["mos_std"][0] == pytest.approx(0.707)


def test_a_decimal_comma_in_a_comma_separated_file_is_rejected_with_a_hint(tmp_path):
    found = rejected(tmp_path, 'image,mos\na.jpg,"1,5"\nb.jpg,5\n')
    assert found == [(2, "column 'mos' (2): '1,5' is not a number (decimal commas are read only in ;- or tab-separated files)")]


def test_decimal_commas_are_read_in_a_tab_separated_file(tmp_path):
    text = "image\tmos\tvotes_1\tvotes_2\tSD\na.jpg\t1,5\t3\t1\t0,25\nb.jpg\t7,25\t0\t2\t0\nc.jpg\t6.5\t1\t1\t0\n"
    table, problems = labels.read_labels(write(tmp_path, text), "csv", data.ScoreScale(1, 10, 5))
    assert not problems and list(table["mos"]) == [1.5, 7.25, 6.5]
    koniq = "image_name\tc1\tc2\tc3\tc4\tc5\tc_total\tMOS\tSD\na.jpg\t0\t1\t2\t1\t0\t4\t3,0\t0,707\n"
    table, problems = labels.read_labels(write(tmp_path, koniq), "koniq10k", KONIQ)
    assert not problems and table["mos"][0] == 3.0 and table["mos_std"][0] == pytest.approx(0.707)


@pytest.mark.parametrize(
    ("text", "data_format", "images"),
    [
        # a comma inside a quoted column name of a ;-separated header: it was read as comma-separated
        ('image;mos;"note, free text"\na.jpg;5,5;fine\nb.jpg;6;"ok, really"\n', "csv", ["a.jpg", "b.jpg"]),
        ('"image_name";"c1";"c2";"MOS";"comment, if any"\na.jpg;1;1;1,5;\n', "koniq10k", ["a.jpg"]),
        ('image\t"mos, mean of votes"\tmos\na.jpg\t9\t4,5\n', "csv", ["a.jpg"]),
        # the quoted name holds a semicolon and a tab; the file is comma-separated
        ('image,mos,"a;b\tc"\na.jpg,4.5,x\n', "csv", ["a.jpg"]),
    ],
)
def test_the_separator_is_the_one_that_splits_the_header_into_the_required_columns(tmp_path, text, data_format, images):
    table, problems = labels.read_labels(write(tmp_path, text), data_format, data.ScoreScale(1, 10, 5))
    assert not problems and list(table["image_id"]) == images


def test_a_header_no_separator_fits_names_the_missing_column_as_the_best_one_splits_it(tmp_path):
    with pytest.raises(ValueError, match=r"line 1: no column 'image' \(the header has: file, mos, note, x\)"):
        labels.read_labels(write(tmp_path, 'file;mos;"note, x"\na.jpg;5;y\n'), "csv", KONIQ)
    with pytest.raises(ValueError, match=r"line 1: no column 'mos' \(the header has: image, score\)"):
        labels.read_labels(write(tmp_path, "image\tscore\na.jpg\t5\n"), "csv", KONIQ)


@pytest.mark.parametrize(
    ("data_format", "text"),
    [
        # MOS as percentages ("15%")
        ("csv", "image\tmos\n" + "".join(f"p{index}.png\t{index % 9 + 1}5%\n" for index in range(6)) + "p6.png\t3\np7.png\t4\n"),
        ("koniq10k", "image_name,MOS,SD\n" + "".join(f'p{index}.png,"{index % 4 + 1},5",0.5\n' for index in range(6)) + "p6.png,3,0.5\np7.png,4,0.5\n"),
    ],
)
def test_a_file_whose_rows_are_mostly_rejected_stops_the_run_and_keeps_its_rejected_rows(tmp_path, monkeypatch, data_format, text):
    (tmp_path / "images").mkdir()
    monkeypatch.setattr(data, "image_info", never_read)  # stops before any image is read
    with pytest.raises(data.DataError) as caught:
        labels.read_labelled(data_format, write(tmp_path, text), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, test_fraction=0.5, validation_fraction=0.5, progress=False)
    message = str(caught.value)
    assert "labels.csv: 6 of its 8 rows were rejected, more than 25%" in message and "line 2: column " in message and "malformed_rows.csv" in message
    assert [problem.line for problem in caught.value.problems] == [2, 3, 4, 5, 6, 7]  # what the notebook writes to malformed_rows.csv


def test_a_quarter_of_the_rows_rejected_is_still_a_file_with_bad_rows_and_more_is_not(tmp_path, monkeypatch):
    names = [f"p{index}.png" for index in range(8)]
    make_images(tmp_path / "images", names)
    mos = ["5", "6", "4", "7", "3", "8", "x", "y"]
    text = "image,mos\n" + "".join(f"{name},{value}\n" for name, value in zip(names, mos))
    metadata, _, problems, _ = labels.read_labelled("csv", write(tmp_path, text), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, test_fraction=0.25, validation_fraction=0.25, progress=False)
    assert len(metadata) == 6 and [problem.line for problem in problems] == [8, 9]  # 2 of 8: reported, and the run goes on
    mos[5] = "z"
    text = "image,mos\n" + "".join(f"{name},{value}\n" for name, value in zip(names, mos))
    with pytest.raises(data.DataError, match=r"labels.csv: 3 of its 8 rows were rejected, more than 25%: is the file in the expected layout \(csv: image, mos"):
        labels.read_labelled("csv", write(tmp_path, text), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, test_fraction=0.25, validation_fraction=0.25, progress=False)


def test_excels_empty_trailing_columns_are_ignored_and_named_columns_keep_their_policy(tmp_path):
    text = "image,mos,,\na.jpg,5,,\nb.jpg,6\nc.jpg,7,,,\nd.jpg,8,,note\n"
    table, problems = labels.read_labels(write(tmp_path, text), "csv", data.ScoreScale(1, 10, 5))
    assert list(table["image_id"]) == ["a.jpg", "b.jpg", "d.jpg"]  # rows with or without the empty columns
    assert [(problem.line, problem.reason) for problem in problems] == [(4, "expected 2 to 4 fields as in the header, found 5")]
    table, problems = labels.read_labels(write(tmp_path, "image,mos,photographer\na.jpg,5,Ann\n"), "csv", data.ScoreScale(1, 10, 5))
    assert not problems and list(table["image_id"]) == ["a.jpg"]  # a named column the format does not use is ignored, as before
    with pytest.raises(ValueError, match=r"line 1: column 'mos' appears twice"):  # unnamed columns only are exempt
        labels.read_labels(write(tmp_path, "image,mos,,mos\na.jpg,5,,5\n"), "csv", data.ScoreScale(1, 10, 5))


@pytest.mark.parametrize("name", ["split", "Subset", "partition"])
def test_the_set_column_is_found_under_its_common_other_names(tmp_path, name):
    table, problems = labels.read_labels(write(tmp_path, f"image,mos,{name}\na.jpg,5,test\nb.jpg,6,training\n"), "csv", data.ScoreScale(1, 10, 5))
    assert not problems and list(table["set"]) == ["test", "train"]


def test_two_set_columns_are_refused_naming_both_and_the_expected_name(tmp_path):
    with pytest.raises(ValueError, match=r"labels.csv, line 1: columns 'set', 'split' would each be the set column; keep one, named 'set'"):
        labels.read_labels(write(tmp_path, "image,mos,split,set\na.jpg,5,test,train\n"), "csv", data.ScoreScale(1, 10, 5))


def test_paths_through_parent_folders_are_duplicates_of_the_plain_name(tmp_path):
    found = rejected(tmp_path, "image,mos\nimg05.jpg,5\nsub/../img05.jpg,6\nsub/./x/../img06.jpg,4\nsub/img06.jpg,4\n")
    assert found == [(3, "column 'image' (1): duplicate image (first at line 2, kept)"), (5, "column 'image' (1): duplicate image (first at line 4, kept)")]


def test_names_leading_out_of_images_dir_are_rejected_with_line_and_column(tmp_path):
    text = "image,mos\n../outside.jpg,5\nsub/../../x.jpg,5\n..\\x.jpg,5\n..,5\nsub/..,5\n./,5\n..a.jpg,5\nsub/..b/c.jpg,5\nsub/../d.jpg,5\n"
    found = rejected(tmp_path, text)
    assert found == [
        (2, "column 'image' (1): '../outside.jpg' leads out of images_dir (it is '../outside.jpg'); give it relative to images_dir, inside it"),
        (3, "column 'image' (1): 'sub/../../x.jpg' leads out of images_dir (it is '../x.jpg'); give it relative to images_dir, inside it"),
        (4, "column 'image' (1): '..\\\\x.jpg' leads out of images_dir (it is '../x.jpg'); give it relative to images_dir, inside it"),
        (5, "column 'image' (1): '..' leads out of images_dir (through '..'); give it relative to images_dir, inside it"),
        (6, "column 'image' (1): 'sub/..' names images_dir itself, not an image in it"),
        (7, "column 'image' (1): './' names images_dir itself, not an image in it"),
    ]  # "..a.jpg", "sub/..b/c.jpg" and "sub/../d.jpg" are names inside it


def test_an_image_outside_images_dir_is_not_read_but_a_symlink_inside_it_may_point_anywhere(tmp_path):
    import os

    make_images(tmp_path / "images", [f"p{index}.png" for index in range(6)])
    make_images(tmp_path / "elsewhere", ["big/q.png", "outside.png"])
    os.symlink(tmp_path / "elsewhere" / "big", tmp_path / "images" / "linked")  # a big folder linked in
    rows = [f"p{index}.png,{index + 2}" for index in range(6)] + ["linked/q.png,5", "../elsewhere/outside.png,6"]
    metadata, unreadable, problems, _ = labels.read_labelled("csv", write(tmp_path, "image,mos\n" + "\n".join(rows) + "\n"), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, test_fraction=0.3, validation_fraction=0.3, progress=False)
    assert unreadable.empty and "linked/q.png" in set(metadata["image_id"]) and len(metadata) == 7
    assert all(path.parent.parent == tmp_path / "images" or path.parent == tmp_path / "images" for path in data.image_paths(metadata))
    assert [(problem.line, problem.reason.split(":")[0]) for problem in problems] == [(9, "column 'image' (1)")]


def test_control_characters_in_an_image_name_are_rejected_with_line_and_column(tmp_path):
    text = 'image,mos\n"a\x00.jpg",5\n"b\r.jpg",5\n"c\nd.jpg",5\n"e.jpg\x1f",5\n"f\tg.jpg",5\n" h.jpg\t",5\n'
    found = rejected(tmp_path, text)
    assert found == [
        (2, "column 'image' (1): 'a\\x00.jpg' holds a control character ('\\x00'), which no file name of a data set has"),
        (3, "column 'image' (1): 'b\\r.jpg' holds a control character ('\\r'), which no file name of a data set has"),
        (5, "column 'image' (1): 'c\\nd.jpg' holds a control character ('\\n'), which no file name of a data set has"),
        (7, "column 'image' (1): 'e.jpg\\x1f' holds a control character ('\\x1f'), which no file name of a data set has"),
        (8, "column 'image' (1): 'f\\tg.jpg' holds a control character ('\\t'), which no file name of a data set has"),
    ]  # the records at lines 3 and 5 span two lines each (a CR ends a line too); spaces and a tab around a name are an editor's, and go


def test_a_nul_byte_in_an_image_name_never_reaches_the_file_system_as_a_bare_error(tmp_path):
    names = [f"p{index}.png" for index in range(6)]
    make_images(tmp_path / "images", names)
    text = "image,mos\n" + "".join(f"{name},{index + 2}\n" for index, name in enumerate(names)) + "p\x00.png,5\n"
    metadata, unreadable, problems, _ = labels.read_labelled("csv", write(tmp_path, text), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, test_fraction=0.3, validation_fraction=0.3, progress=False)
    assert len(metadata) == 6 and unreadable.empty and [problem.line for problem in problems] == [8]
    # and should such a name come from elsewhere, the image check reports it instead of raising
    assert data.image_info(tmp_path / "images" / "p\x00.png") == (0, 0, "unreadable: the file name cannot be a path (embedded null byte)")


# KonIQ-10k's own row for 10004473376.jpg: its MOS is the votes' mean, written with 9 decimals
KONIQ_ROW = '"10004473376.jpg",0,0,25,73,7,105,3.828571429,0.527041703,77.38373881'


def test_votes_that_disagree_with_c_total_or_the_mos_or_are_all_zero_are_rejected(tmp_path):
    rows = [
        KONIQ_ROW,
        "a.jpg,0,0,10,20,20,120,4.2,0.7,50",  # 50 votes, c_total 120
        "b.jpg,0,0,0,0,0,0,3.0,0,50",  # no votes: no spread, no check of the MOS
        "c.jpg,1,2,3,4,5,15,1.0,1.2,50",  # the votes' mean is 3.667
        "d.jpg,1,2,3,4,5,15,3.7,1.2,50",  # rounded to one decimal: kept
        "e.jpg,1,2,3,4,5,15,3.6,1.2,50",  # off by 0.067
        "f.jpg,1,2,3,4,5,15,4,1.2,50",  # rounded to a whole number: kept
        "g.jpg,1,2,3,4,5,16,1.0,1.2,50",  # both
        "h.jpg,1,2,3,4,5,x,3.667,1.2,50",  # a c_total that is no number is reported once, alone
    ]
    table, problems = labels.read_labels(write(tmp_path, KONIQ_HEADER + "\n" + "\n".join(rows) + "\n"), "koniq10k", KONIQ)
    assert list(table["image_id"]) == ["10004473376.jpg", "d.jpg", "f.jpg"] and table["mos_std"].notna().all()
    votes = "columns 'c1' ... 'c5' (2-6)".replace("'", "")
    found = {problem.line: problem.reason for problem in problems}
    assert found == {
        3: f"{votes}: the votes sum to 50, but column 'c_total' (7) says 120",
        4: f"{votes}: no votes (all are 0), so no MOS or spread can come from them",
        5: f"column 'MOS' (8): 1 is not the mean of the votes for the scores 1-5 in {votes}, 3.667 (allowed difference 0.05)",
        7: f"column 'MOS' (8): 3.6 is not the mean of the votes for the scores 1-5 in {votes}, 3.667 (allowed difference 0.05)",
        9: f"{votes}: the votes sum to 15, but column 'c_total' (7) says 16; column 'MOS' (8): 1 is not the mean of the votes for the scores 1-5 in {votes}, 3.667 (allowed difference 0.05)",
        10: "column 'c_total' (7): 'x' is not a whole number of votes",
    }


def test_votes_in_columns_out_of_order_are_compared_by_their_score_and_named_by_position(tmp_path):
    text = 'MOS_zscore,"image_name",SD,c5,c4,c3,c2,c1,c_total,MOS\n50,a.jpg,0.5,1,2,3,2,2,10,2.80\n50,b.jpg,0.5,1,2,3,2,2,10,2.50\n'
    table, problems = labels.read_labels(write(tmp_path, text), "koniq10k", KONIQ)
    assert list(table["image_id"]) == ["a.jpg"] and table.loc[0, [f"votes_{k}" for k in range(1, 6)]].tolist() == [2, 2, 3, 2, 1]
    assert [(problem.line, problem.reason) for problem in problems] == [
        (3, "column 'MOS' (10): 2.5 is not the mean of the votes for the scores 1-5 in columns c1 ... c5 (8, 7, 6, 5, 4), 2.8 (allowed difference 0.05)"),
    ]


def test_fractions_must_come_back_to_c_total_and_a_mos_on_another_scale_is_not_compared(tmp_path):
    header = "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set\n"
    text = header + "a.jpg,0.0,0.0,0.238095238095,0.695238095238,0.0666666666667,105,77.38,0.527,training\nb.jpg,0.5,0.5,0,0,0,3,20,0.5,test\nc.jpg,0,0,0,0,0,0,20,0.5,test\n"
    table, problems = labels.read_labels(write(tmp_path, text), "koniq10k", data.ScoreScale(0, 100, 50))
    assert list(table["image_id"]) == ["a.jpg"]  # MOS 77.38 on 0-100 is no linear map of the mean 3.83, and is kept
    assert [(problem.line, problem.reason) for problem in problems] == [
        (3, "columns c1 ... c5 (2-6): the votes sum to 4, but column 'c_total' (7) says 3"),  # 1.5 and 1.5 votes, rounded
        (4, "columns c1 ... c5 (2-6): no votes (all are 0), so no MOS or spread can come from them"),
    ]


@pytest.mark.parametrize(
    ("scale", "kept"),
    [
        (data.ScoreScale(1, 5, 3), ["a.jpg"]),  # MOS on the votes' 1..K: compared
        (data.ScoreScale(1, 10, 5), ["a.jpg", "b.jpg"]),  # five vote columns on a 1-10 scale: how they map is unknown
        (data.ScoreScale(0, 4, 2), ["a.jpg", "b.jpg"]),  # nor on 0-4 (b's MOS 1.0 is inside it)
    ],
)
def test_a_plain_csvs_mos_is_compared_with_its_votes_only_on_their_own_scale(tmp_path, scale, kept):
    text = "image,mos,votes_1,votes_2,votes_3,votes_4,votes_5\na.jpg,3.67,1,2,3,4,5\nb.jpg,1.0,1,2,3,4,5\nc.jpg,2,0,0,0,0,0\n"
    table, problems = labels.read_labels(write(tmp_path, text), "csv", scale)
    assert list(table["image_id"]) == kept and problems[-1].line == 4 and "no votes (all are 0)" in problems[-1].reason
    if scale.score_max == 5:
        assert problems[0].line == 3 and problems[0].reason.startswith("column 'mos' (2): 1 is not the mean of the votes for the scores 1-5 in columns votes_1 ... votes_5 (3-7), 3.667")


def test_the_split_rule_names_the_set_column_even_when_no_row_survives(tmp_path, monkeypatch):
    table, _ = labels.read_labels(write(tmp_path, "image,mos,split\na.jpg,5,test\nb.jpg,6,validation\n"), "csv", data.ScoreScale(1, 10, 5))
    assert labels.assign_sets(table, 0, 0.2, 0.1)[1] == "the labels file's set column ('split')"
    table, _ = labels.read_labels(write(tmp_path, "image,mos,set\na.jpg,5,test\nb.jpg,6,train\n"), "csv", data.ScoreScale(1, 10, 5))
    assert labels.assign_sets(table, 0, 0.2, 0.1)[1] == "the labels file's set column ('set'); validation drawn from its train images (validation_fraction 0.1, seed 0)"
    table, _ = labels.read_labels(write(tmp_path, "image,mos\na.jpg,5\nb.jpg,6\n"), "csv", data.ScoreScale(1, 10, 5))
    assert labels.assign_sets(table, 0, 0.2, 0.1)[1].startswith("drawn with seed 0: ")
    (tmp_path / "images").mkdir()
    monkeypatch.setattr(data, "image_info", never_read)
    with pytest.raises(data.EmptySetError) as caught:  # a header alone: no row says which set it is in, but the file has the column
        labels.read_labelled("csv", write(tmp_path, "image,mos,set\n"), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, progress=False)
    assert "split: the labels file's set column ('set')" in str(caught.value) and "drawn with seed" not in str(caught.value)


def test_names_in_the_other_unicode_normalisation_find_their_file_and_are_duplicates(tmp_path):
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "caf\u00e9.png"), unicodedata.normalize("NFD", "caf\u00e9.png")
    assert nfc != nfd
    make_images(tmp_path / "images", [nfd, "sous-bois/" + nfc] + [f"p{index}.png" for index in range(4)])  # saved on macOS: NFD
    rows = [f"{nfc},5", f"sous-bois/{nfd},6", f"{nfd},7"] + [f"p{index}.png,{index + 3}" for index in range(4)]
    metadata, unreadable, problems, _ = labels.read_labelled("csv", write(tmp_path, "image,mos\n" + "\n".join(rows) + "\n"), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, test_fraction=0.3, validation_fraction=0.3, progress=False)
    assert unreadable.empty and len(metadata) == 6
    paths = {image_id: path for image_id, path in zip(metadata["image_id"], data.image_paths(metadata))}
    assert paths[nfc].name == nfd and paths[nfc].is_file() and paths[f"sous-bois/{nfd}"].name == nfc
    assert [(problem.line, problem.reason) for problem in problems] == [(4, "column 'image' (1): duplicate image (first at line 2, kept)")]


def locked_folder(monkeypatch, folder):
    """Make `folder` behave as with chmod 000 for a user other than root: its entries cannot be
    listed, nor anything inside it reached. As root (these tests' usual user) chmod denies nothing."""
    import os
    import pathlib

    stat, scandir = pathlib.Path.stat, os.scandir

    def denied(path):
        return PermissionError(13, "Permission denied", str(path))

    def locked_stat(self, *args, **kwargs):
        if folder in self.parents:
            raise denied(self)
        return stat(self, *args, **kwargs)

    def locked_scandir(path="."):
        if folder == pathlib.Path(path) or folder in pathlib.Path(path).parents:
            raise denied(path)
        return scandir(path)

    monkeypatch.setattr(pathlib.Path, "stat", locked_stat)
    monkeypatch.setattr(os, "scandir", locked_scandir)


def test_an_image_in_a_folder_that_cannot_be_searched_is_listed_as_unreadable(tmp_path, monkeypatch):
    names = [f"p{index}.png" for index in range(6)] + ["locked/q.png"]
    make_images(tmp_path / "images", names)
    locked_folder(monkeypatch, tmp_path / "images" / "locked")
    text = "image,mos\n" + "".join(f"{name},{index + 2}\n" for index, name in enumerate(names))
    metadata, unreadable, _, _ = labels.read_labelled("csv", write(tmp_path, text), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, test_fraction=0.3, validation_fraction=0.3, progress=False)
    assert len(metadata) == 6 and list(unreadable["image_id"]) == ["locked/q.png"]
    assert unreadable["reason"][0] == "unreadable: Permission denied (a folder on its path cannot be searched: check its permissions)"


def test_an_images_folder_that_cannot_be_read_is_one_error_naming_it(tmp_path, monkeypatch):
    make_images(tmp_path / "images", ["p0.png"])
    locked_folder(monkeypatch, tmp_path / "images")
    with pytest.raises(data.DataError, match=r"images: images_dir cannot be read \(Permission denied\); check its permissions"):
        labels.read_labelled("csv", write(tmp_path, "image,mos\np0.png,5\n"), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, progress=False)


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0, reason="root reads a folder whatever its mode")
def test_a_real_chmod_000_subfolder_is_listed_as_unreadable(tmp_path):
    names = [f"p{index}.png" for index in range(6)] + ["locked/q.png"]
    make_images(tmp_path / "images", names)
    (tmp_path / "images" / "locked").chmod(0)
    try:
        text = "image,mos\n" + "".join(f"{name},{index + 2}\n" for index, name in enumerate(names))
        _, unreadable, _, _ = labels.read_labelled("csv", write(tmp_path, text), tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, test_fraction=0.3, validation_fraction=0.3, progress=False)
        assert list(unreadable["image_id"]) == ["locked/q.png"] and unreadable["reason"][0].startswith("unreadable: Permission denied")
    finally:
        (tmp_path / "images" / "locked").chmod(0o755)


@pytest.mark.slow
def test_a_failed_rerun_of_notebook_00_leaves_no_report_beside_the_previous_outputs(source, tmp_path):
    labels_file, images_dir = write_plain_csv(tmp_path / "mine", source)
    profile, work = "test-data-formats-rerun", tmp_path / "work"
    results = RESULTS_DIR / profile
    parameters = {
        "profile": profile, "work_dir": str(work), "ava_dir": str(tmp_path / "ava"), "generate_embedded": False, "seed": 0, "data_format": "csv",
        "labels_file": str(labels_file), "images_dir": str(images_dir), "score_min": 1.0, "score_max": 10.0, "accuracy_threshold": 5.5, "validation_fraction": 0.2,
    }

    def run():
        papermill.execute_notebook(str(REPO / "notebooks" / "00_data.ipynb"), str(tmp_path / "00_data.ipynb"), cwd=str(REPO), kernel_name="python3", progress_bar=False, parameters=parameters)

    try:
        run()
        first = (work / "metadata.csv").read_text()
        assert pd.read_csv(results / "malformed_rows.csv").empty
        # the labels change: a comma-separated export, two thirds of its MOS values with (quoted) decimal commas
        table = pd.read_csv(labels_file)
        table["mos"] = [f"{value:.2f}".replace(".", "," if index < 16 else ".") for index, value in enumerate(table["mos"])]
        table.to_csv(labels_file, index=False)
        with pytest.raises(papermill.PapermillExecutionError, match="rows were rejected, more than 25%"):
            run()
        assert not (work / "metadata.csv").exists() and not (work / "metadata.json").exists() and not (results / "data.json").exists()
        assert (work / "metadata.previous.csv").read_text() == first and (results / "data.previous.json").exists()
        assert (results / "malformed_rows.previous.csv").exists()
        assert list(pd.read_csv(results / "malformed_rows.csv")["line"]) == list(range(2, 18))  # this run's report, alone
    finally:
        shutil.rmtree(results, ignore_errors=True)


def test_a_labels_file_or_images_folder_behind_a_folder_that_cannot_be_searched_is_named(tmp_path, monkeypatch):
    make_images(tmp_path / "images", ["p0.png"])
    labels_file = write(tmp_path, "image,mos\np0.png,5\n")
    locked_folder(monkeypatch, tmp_path)  # as root, chmod 000 on tmp_path would deny nothing
    with pytest.raises(data.DataError, match=r"images: images_dir cannot be read \(Permission denied\)"):
        labels.read_labelled("csv", labels_file, tmp_path / "images", data.ScoreScale(1, 10, 5), seed=0, progress=False)
    with pytest.raises(PermissionError, match=r"labels.csv: labels_file cannot be read \(Permission denied\); check its permissions"):
        labels.read_labels(labels_file, "csv", data.ScoreScale(1, 10, 5))


def test_the_dry_runs_input_check_says_when_a_path_cannot_be_reached(tmp_path, monkeypatch):
    from mlsp import parameter_rules

    values = {"data_format": "csv", "generate_embedded": False, "labels_file": str(write(tmp_path, "image,mos\n")), "images_dir": str(tmp_path)}
    assert parameter_rules.data_inputs(values) == []
    assert parameter_rules.data_inputs({**values, "data_format": "ava", "labels_file": "absent.csv"}) == []  # AVA reads ava_dir, which may be absent
    locked_folder(monkeypatch, tmp_path)
    assert parameter_rules.data_inputs(values) == [("labels_file", f"{tmp_path / 'labels.csv'} cannot be reached (Permission denied); check the permissions of its folders")]


@pytest.mark.parametrize("first_line", ["sep=;", '"sep=;"', "SEP=;"])
def test_excels_separator_line_declares_the_separator_and_lines_keep_their_numbers(tmp_path, first_line):
    text = f"{first_line}\r\nimage;mos;set\r\na.jpg;5,5;train\r\nb.jpg;x;test\r\n"
    table, problems = labels.read_labels(write(tmp_path, "\ufeff" + text), "csv", data.ScoreScale(1, 10, 5))
    assert list(table["image_id"]) == ["a.jpg"] and table["mos"][0] == 5.5 and list(table["line"]) == [3]
    assert [(problem.line, problem.reason) for problem in problems] == [(4, "column 'mos' (2): 'x' is not a number")]


def test_repeated_byte_order_marks_are_dropped(tmp_path):
    table, problems = labels.read_labels(write(tmp_path, "\ufeff\ufeffimage,mos\na.jpg,5\n"), "csv", data.ScoreScale(1, 10, 5))
    assert not problems and list(table["image_id"]) == ["a.jpg"]


def test_numbers_too_large_for_a_count_or_a_float_are_rejected_rows_naming_line_and_column(tmp_path):
    scale = data.ScoreScale(1, 2, 1.5)
    text = "image,mos,votes_1,votes_2\na.jpg,1.5,1e400,1\nb.jpg,1.5,1e30,1e30\nc.jpg,1.5,9223372036854775807,9223372036854775807\nd.jpg,1e400,1,1\nok.jpg,1.5,1000000000,1000000000\n"
    table, problems = labels.read_labels(write(tmp_path, text), "csv", scale)
    assert list(table["image_id"]) == ["ok.jpg"] and table["n_votes"][0] == 2 * 10**9
    found = {problem.line: problem.reason for problem in problems}
    too_many = "is not a number of votes (over the maximum of 1,000,000,000 votes)"
    assert found == {
        2: "column 'votes_1' (3): '1e400' is not a number of votes (too large: beyond floating-point numbers)",
        3: f"column 'votes_1' (3): '1e30' {too_many}; column 'votes_2' (4): '1e30' {too_many}",
        4: f"column 'votes_1' (3): '9223372036854775807' {too_many}; column 'votes_2' (4): '9223372036854775807' {too_many}",
        5: "column 'mos' (2): '1e400' is not a number (too large: beyond floating-point numbers)",
    }
    rows = ["a.jpg,0,0,1,0,0,1e400,3,0.5,50", "b.jpg,0,0,1,0,0,1e30,3,0.5,50", "c.jpg,0,0,1,0,0,1,3,1e400,50"]
    table, problems = labels.read_labels(write(tmp_path, KONIQ_HEADER + "\n" + "\n".join(rows) + "\n"), "koniq10k", KONIQ)
    found = {problem.line: problem.reason for problem in problems}
    assert found[2].startswith("column 'c_total' (7): '1e400' is not a whole number of votes (too large: beyond floating-point numbers)")
    assert found[3].startswith("column 'c_total' (7): '1e30' is not a whole number of votes (over the maximum of 1,000,000,000 votes)")
    assert found[4] == "column 'SD' (9): '1e400' is not a standard deviation (too large: beyond floating-point numbers)"
    fractions = "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set\na.jpg,0.5,0.5,0,0,0,1e30,50,0.5,training\n"
    _, problems = labels.read_labels(write(tmp_path, fractions), "koniq10k", data.ScoreScale(0, 100, 50))
    assert [problem.line for problem in problems] == [2]  # fractions of a c_total too large: rejected, no crash


def test_one_file_under_two_names_through_a_linked_folder_or_a_hard_link_is_a_duplicate_row(tmp_path):
    import os

    images_dir = tmp_path / "images"
    make_images(images_dir, [f"real/{index}.png" for index in range(12)])
    os.symlink(images_dir / "real", images_dir / "link")
    os.link(images_dir / "real" / "1.png", images_dir / "hard.png")
    rows = [f"real/{index}.png,{index % 8 + 2}" for index in range(12)] + ["link/0.png,9", "hard.png,1", "link/7.png,3"]
    metadata, unreadable, problems, _ = labels.read_labelled("csv", write(tmp_path, "image,mos\n" + "\n".join(rows) + "\n"), images_dir, data.ScoreScale(1, 10, 5), seed=0, test_fraction=0.3, validation_fraction=0.3, progress=False)
    assert unreadable.empty and sorted(metadata["image_id"]) == sorted(f"real/{index}.png" for index in range(12))
    found = [(problem.line, problem.kind, problem.reason) for problem in problems]
    link = "(a symbolic or hard link; the first row is kept)"
    assert found == [
        (14, data.LABELS_ROW, f"column 'image' (1): duplicate image: 'link/0.png' is the same file as 'real/0.png' at line 2 {link}"),
        (15, data.LABELS_ROW, f"column 'image' (1): duplicate image: 'hard.png' is the same file as 'real/1.png' at line 3 {link}"),
        (16, data.LABELS_ROW, f"column 'image' (1): duplicate image: 'link/7.png' is the same file as 'real/7.png' at line 9 {link}"),
    ]


def test_a_scale_that_puts_every_image_in_one_class_stops_and_a_scale_far_wider_than_the_mos_warns(tmp_path, capsys):
    make_images(tmp_path / "images", [f"{index}.png" for index in range(10)])
    labels_file = write(tmp_path, "image,mos\n" + "\n".join(f"{index}.png,{1 + index * 0.4:.1f}" for index in range(10)) + "\n")  # KonIQ's 1-5 MOS

    def read(scale):
        return labels.read_labelled("csv", labels_file, tmp_path / "images", scale, seed=0, test_fraction=0.3, validation_fraction=0.3, progress=False)

    with pytest.raises(data.DataError) as error:
        read(data.ScoreScale(0, 100, 50))  # the sets file's 0-100 scale
    message = str(error.value)
    assert message.startswith(f"{labels_file}: accuracy_threshold 50 leaves the high-quality class empty (the 10 usable images' MOS run from 1 to 4.6; score_min 0, score_max 100)")
    with pytest.raises(data.DataError, match="accuracy_threshold 0.5 leaves the low-quality class empty"):
        read(data.ScoreScale(0, 10, 0.5))
    capsys.readouterr()
    metadata, *_ = read(data.ScoreScale(0, 100, 3))
    assert len(metadata) == 10
    assert capsys.readouterr().out.startswith(f"warning: {labels_file}: the MOS fill only 3.6% of the stated scale (the 10 usable images' MOS run from 1 to 4.6")
    read(data.ScoreScale(1, 5, 3))
    assert capsys.readouterr().out == ""
