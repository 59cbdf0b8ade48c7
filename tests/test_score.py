"""Scoring new photos with a saved scorer: 8 crops, bounded memory, rows kept as they are scored,
bad files reported and skipped."""
import csv
import dataclasses
import json
import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlsp import cli, features, heads, images, score

LITE0_CHANNELS = 1808
INCEPTION_V3_CHANNELS = 10048  # narrow MLSP features of mixed0-mixed10 (the paper's count)


def smooth_photo(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like RGB uint8 image: smooth gradients plus a little noise, no symmetry."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    channels = [np.sin(rows / (7 + 3 * c) + c) * np.cos(columns / (11 + 2 * c)) * 100 + 128 + 30 * rows / height for c in range(3)]
    image = np.stack(channels, axis=-1) + rng.normal(0, 6, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def save(array: np.ndarray, path: Path, **options) -> Path:
    Image.fromarray(array).save(path, **options)
    return path


def read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("head")
    head = heads.single_1fc(LITE0_CHANNELS)
    head.layers[-1].set_weights([np.full((LITE0_CHANNELS, 1), 0.01, np.float32), np.array([5.0], np.float32)])
    head.save(folder / "trained.keras")
    return folder / "trained.keras"


@pytest.fixture(scope="module")
def scorer(head_file):
    return score.save_scorer(head_file.parent / "model", head_file, "efficientnet_lite0", "imagenet", "narrow", trained_on="test", max_side=160)


@pytest.fixture(scope="module")
def loaded(scorer):
    return score.load_scorer(scorer)


@pytest.fixture
def cached_loading(monkeypatch, loaded):
    """`mlsp score` with the module's loaded Lite0 scorer (loading costs seconds; tested on its own),
    honouring each folder's max_side; counts the loads."""
    loads = []

    def load(model_dir, cache_dir=None):
        loads.append(model_dir)
        config = score.read_config(model_dir)
        return dataclasses.replace(
            loaded, folder=Path(model_dir), max_side=config["max_side"] or score.FALLBACK_MAX_SIDE, views=config["views"],
            score_scale=score.scoring_scale(config, model_dir),
        )

    monkeypatch.setattr(score, "load_scorer", load)
    return loads


def expected_score(loaded, image: np.ndarray) -> float:
    """The head's mean over the 8 views, computed apart from score.py: features of all 8 views in
    one batch, through the head's known weights."""
    narrow = loaded.forward(loaded.backbone.preprocess(features.augmented_views(image)))["narrow"]
    return float(np.mean(np.asarray(narrow) @ np.full((LITE0_CHANNELS,), 0.01) + 5.0))


def test_scores_folder_and_skips_bad_files(scorer, cached_loading, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.jpg", (120, 90)), ("b.png", (64, 100))):
        Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(photos / name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(photos), "--model", str(scorer), "--output", str(output)]) == score.EXIT_SOME_SKIPPED
    table = pd.read_csv(output).set_index("path")
    assert list(table.reset_index().columns) == score.COLUMNS
    assert table["predicted_mos"].notna().sum() == 2
    assert np.isnan(table.loc[str(photos / "broken.jpg"), "predicted_mos"])
    error = table.loc[str(photos / "broken.jpg"), "error"]
    assert isinstance(error, str) and error  # the reason is kept beside the path
    assert f"skipped {photos / 'broken.jpg'}:" in capsys.readouterr().err
    assert (table.loc[str(photos / "a.jpg"), ["scored_width", "scored_height"]] == [120, 90]).all()


def test_score_is_the_mean_over_the_eight_full_resolution_crops(scorer, loaded, cached_loading, tmp_path):
    image = np.random.default_rng(1).integers(0, 255, size=(90, 130, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    table = score.score_paths([tmp_path / "x.png"], scorer, progress=False)
    assert table["predicted_mos"].iloc[0] == pytest.approx(expected_score(loaded, image), rel=1e-4)


def test_a_subset_of_views_equals_those_views_of_all_eight():
    image = np.random.default_rng(2).integers(0, 255, size=(37, 53, 3), dtype=np.uint8)  # odd sides: uneven corners
    every_view = features.augmented_views(image)
    assert every_view.shape == (8, 32, 46, 3)
    np.testing.assert_array_equal(every_view[4], every_view[0][:, ::-1])
    for indices in ([0], [3, 4], [5, 6, 7], list(range(8))):
        np.testing.assert_array_equal(features.augmented_views(image, indices), every_view[indices])


def test_views_per_batch_follows_the_budget():
    per_view = score.forward_bytes_per_pixel("inception_v3") * 1000
    assert score.views_per_batch("inception_v3", 1000, per_view * 3.5) == 3
    assert score.views_per_batch("inception_v3", 1000, per_view * 100) == 8
    assert score.views_per_batch("inception_v3", 1000, per_view * 0.9) == 0


def test_batches_sized_to_the_budget_leave_the_score_unchanged(loaded):
    image = smooth_photo(110, 80, seed=3)
    crop_height, crop_width = features.crop_size(80, 110)
    per_view = score.forward_bytes_per_pixel(loaded.backbone.name) * crop_height * crop_width
    batch_sizes = []

    def counting(batch):
        batch_sizes.append(len(batch))
        return loaded.forward(batch)

    counted = dataclasses.replace(loaded, forward=counting)
    scores = {views: score.score_image(counted, image, per_view * views) for views in (1, 3, 8)}
    assert batch_sizes == [1] * 8 + [3, 3, 2] + [8]
    assert scores[1] == pytest.approx(expected_score(loaded, image), rel=1e-5)
    assert scores[3] == pytest.approx(scores[1], rel=1e-5) and scores[8] == pytest.approx(scores[1], rel=1e-5)


def test_scoring_side_keeps_the_training_range_and_thin_images_scorable():
    assert score.scoring_side((800, 600), max_side=800, min_side=86) is None  # within the range: untouched
    assert score.scoring_side((6000, 4000), max_side=800, min_side=86) == 800
    assert score.scoring_side((4000, 6000), max_side=800, min_side=86) == 800
    panorama = score.scoring_side((20000, 1000), max_side=800, min_side=86)
    assert panorama == 1720 and round(1000 * panorama / 20000) >= 86  # the shorter side stays >= 86
    thin = score.scoring_side((2000, 90), max_side=800, min_side=86)
    assert thin == 1912 and round(90 * thin / 2000) == 86
    assert score.scoring_side((2000, 86), max_side=800, min_side=86) is None  # any smaller would be too small


def test_every_head_loads_in_a_fresh_process(loaded, tmp_path):
    boundaries = features.block_boundaries(loaded.backbone)
    built = {
        "single_1fc": (heads.single_1fc(LITE0_CHANNELS), "narrow"),
        "single_3fc": (heads.single_3fc(LITE0_CHANNELS), "narrow"),
        "multi_3fc": (heads.multi_3fc(boundaries), "narrow"),
        "pool_3fc": (heads.pool_3fc(LITE0_CHANNELS), "wide"),
    }
    assert set(built) == set(heads.HEADS)
    for name, (model, _) in built.items():
        model.save(tmp_path / f"{name}.keras")
    save(smooth_photo(64, 48, seed=4), tmp_path / "photo.png")
    kinds = {name: kind for name, (_, kind) in built.items()}
    program = f"""
import json, sys
from pathlib import Path
from mlsp import cli, score
assert "mlsp.heads" not in sys.modules  # as in a fresh `mlsp score`
work, statuses = Path({str(tmp_path)!r}), {{}}
for name, kind in {kinds!r}.items():
    folder = score.save_scorer(work / name, work / f"{{name}}.keras", "efficientnet_lite0", "random", kind, trained_on="test", max_side=64)
    statuses[name] = cli.main(["score", str(work / "photo.png"), "--model", str(folder), "--output", str(work / f"{{name}}.csv")])
print(json.dumps(statuses))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {name: score.EXIT_ALL_SCORED for name in heads.HEADS}
    for name in heads.HEADS:
        (row,) = read_rows(tmp_path / f"{name}.csv")
        assert np.isfinite(float(row["predicted_mos"])) and row["error"] == ""


def test_too_small_image_is_reported_and_the_rest_scored_with_an_inception_scorer(tmp_path, capsys):
    head = heads.single_1fc(INCEPTION_V3_CHANNELS)
    head.save(tmp_path / "head.keras")
    folder = score.save_scorer(tmp_path / "scorer", tmp_path / "head.keras", "inception_v3", "random", "narrow", trained_on="test", max_side=800)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, (width, height) in {"a.png": (100, 90), "b.png": (120, 100), "small.png": (80, 60)}.items():
        save(smooth_photo(width, height, seed=width), photos / name)
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(photos), "--model", str(folder), "--output", str(output)]) == score.EXIT_SOME_SKIPPED
    rows = {Path(row["path"]).name: row for row in read_rows(output)}
    assert np.isfinite(float(rows["a.png"]["predicted_mos"])) and np.isfinite(float(rows["b.png"]["predicted_mos"]))
    assert rows["small.png"]["predicted_mos"] == ""
    assert "too small: 80x60" in rows["small.png"]["error"] and "86 px" in rows["small.png"]["error"]
    err = capsys.readouterr().err
    assert "skipped" in err and "small.png" in err and "skipped 1" in err


def test_large_photo_is_scored_at_max_side_unless_full_resolution(scorer, cached_loading, tmp_path):
    original = save(smooth_photo(240, 180, seed=5), tmp_path / "large.png")  # max_side of the scorer: 160
    downscaled = save(images.load_rgb(original, max_side=160), tmp_path / "downscaled.png")
    table = score.score_paths([original], scorer, progress=False)
    assert (table.loc[0, "scored_width"], table.loc[0, "scored_height"]) == (160, 120)
    direct = score.score_paths([downscaled], scorer, progress=False, full_resolution=True)
    assert table.loc[0, "predicted_mos"] == pytest.approx(direct.loc[0, "predicted_mos"], rel=1e-6)
    full = score.score_paths([original], scorer, progress=False, full_resolution=True)
    assert (full.loc[0, "scored_width"], full.loc[0, "scored_height"]) == (240, 180)
    assert full.loc[0, "predicted_mos"] != pytest.approx(table.loc[0, "predicted_mos"], rel=1e-6)


def test_a_view_above_the_memory_budget_is_skipped_without_decoding(scorer, cached_loading, monkeypatch, tmp_path):
    photo = save(smooth_photo(120, 90, seed=6), tmp_path / "photo.png")
    decoded = []
    monkeypatch.setattr(images, "load_rgb", lambda *args, **kwargs: decoded.append(args))
    table = score.score_paths([photo], scorer, progress=False, memory_budget_gb=1e-4)
    assert np.isnan(table.loc[0, "predicted_mos"]) and "above the memory budget" in table.loc[0, "error"]
    assert decoded == []  # decided from the header


def test_a_failed_forward_pass_skips_only_that_image(scorer, loaded, monkeypatch, tmp_path):
    calls = []

    def forward(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise RuntimeError("simulated failure\nwith pages of context")
        return loaded.forward(batch)

    monkeypatch.setattr(score, "load_scorer", lambda model_dir, cache_dir=None: dataclasses.replace(loaded, forward=forward))
    paths = [save(smooth_photo(60 + 10 * index, 50, seed=index), tmp_path / f"{index}.png") for index in range(3)]
    table = score.score_paths(paths, scorer, progress=False)
    assert table["predicted_mos"].notna().tolist() == [True, False, True]
    assert table.loc[1, "error"] == "the forward pass failed (RuntimeError: simulated failure)"


def test_interrupted_run_keeps_its_rows_and_resume_completes_it(scorer, cached_loading, monkeypatch, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(5):
        save(smooth_photo(70 + index, 60, seed=index), photos / f"{index}.png")
    output = tmp_path / "scores.csv"
    decoded, real_load = [], images.load_rgb

    def interrupt_third(path, *args, **kwargs):
        decoded.append(Path(path).name)
        if len(decoded) == 3:
            raise KeyboardInterrupt
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(images, "load_rgb", interrupt_third)
    assert cli.main(["score", str(photos), "--model", str(scorer), "--output", str(output)]) == score.EXIT_INTERRUPTED
    first = read_rows(output)
    assert [Path(row["path"]).name for row in first] == ["0.png", "1.png"] and all(row["predicted_mos"] for row in first)
    assert "--resume" in capsys.readouterr().err

    decoded.clear()
    monkeypatch.setattr(images, "load_rgb", lambda path, *args, **kwargs: decoded.append(Path(path).name) or real_load(path, *args, **kwargs))
    assert cli.main(["score", str(photos), "--model", str(scorer), "--output", str(output)]) == score.EXIT_USAGE  # no silent overwrite
    assert read_rows(output) == first
    assert cli.main(["score", str(photos), "--model", str(scorer), "--output", str(output), "--resume"]) == score.EXIT_ALL_SCORED
    assert decoded == ["2.png", "3.png", "4.png"]  # the first two were not scored again
    rows = read_rows(output)
    assert [Path(row["path"]).name for row in rows] == [f"{index}.png" for index in range(5)]
    assert rows[:2] == first
    assert "2 already in the output" in capsys.readouterr().out


def test_resume_retries_failed_files_and_keeps_one_row_per_file(scorer, cached_loading, tmp_path):
    photo = tmp_path / "late.png"
    photo.write_bytes(b"not yet a png")
    good = save(smooth_photo(70, 60, seed=7), tmp_path / "good.png")
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(good), str(photo), "--model", str(scorer), "--output", str(output)]) == score.EXIT_SOME_SKIPPED
    save(smooth_photo(70, 60, seed=8), photo)  # the file is fixed
    assert cli.main(["score", str(good), str(photo), "--model", str(scorer), "--output", str(output), "--resume"]) == score.EXIT_ALL_SCORED
    rows = read_rows(output)
    assert [Path(row["path"]).name for row in rows] == ["good.png", "late.png"] and all(row["error"] == "" for row in rows)


def test_resume_reads_a_scores_csv_that_a_spreadsheet_resaved_with_a_byte_order_mark(scorer, cached_loading, tmp_path):
    first, second = (save(smooth_photo(70, 60, seed=seed), tmp_path / f"{seed}.png") for seed in (11, 12))
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(first), "--model", str(scorer), "--output", str(output)]) == score.EXIT_ALL_SCORED
    output.write_bytes(b"\xef\xbb\xbf" + output.read_bytes().replace(b"\n", b"\r\n"))  # as Excel saves "CSV UTF-8"
    assert cli.main(["score", str(first), str(second), "--model", str(scorer), "--output", str(output), "--resume"]) == score.EXIT_ALL_SCORED
    rows = read_rows(output)
    assert [Path(row["path"]).name for row in rows] == ["11.png", "12.png"]  # the first kept once, not rescored


@pytest.mark.parametrize("case", ["missing directory", "a directory", "exists", "not a scores csv"])
def test_bad_output_fails_before_the_model_is_loaded(scorer, cached_loading, tmp_path, capsys, case):
    photo = save(smooth_photo(70, 60, seed=9), tmp_path / "photo.png")
    output, flags = {"missing directory": (tmp_path / "nowhere" / "scores.csv", []), "a directory": (tmp_path, []),
                     "exists": (tmp_path / "old.csv", []), "not a scores csv": (tmp_path / "other.csv", ["--resume"])}[case]
    if case == "exists":
        output.write_text("path,predicted_mos,error\nx.jpg,5.0,\n")
    if case == "not a scores csv":
        output.write_text("id,value\n1,2\n")
    before = output.read_text() if output.is_file() else None
    assert cli.main(["score", str(photo), "--model", str(scorer), "--output", str(output), *flags]) == score.EXIT_USAGE
    assert cached_loading == []  # nothing was loaded, nothing scored
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(output) in err[0]
    assert (output.read_text() if output.is_file() else None) == before


@pytest.mark.parametrize("budget", ["0", "-1", "nan", "inf"])
def test_a_budget_that_is_not_a_positive_number_is_refused_before_any_work(scorer, cached_loading, tmp_path, capsys, budget):
    photo = save(smooth_photo(70, 60, seed=9), tmp_path / "photo.png")
    status = cli.main(["score", str(photo), "--model", str(scorer), "--output", str(tmp_path / "s.csv"), "--memory-budget", budget])
    assert status == score.EXIT_USAGE and cached_loading == [] and not (tmp_path / "s.csv").exists()
    assert "--memory-budget" in capsys.readouterr().err


def test_a_head_of_another_kind_is_refused_when_loading(head_file, tmp_path):
    folder = score.save_scorer(tmp_path / "wrong", head_file, "efficientnet_lite0", "random", "wide", trained_on="test", max_side=160)
    with pytest.raises(score.ScoringError, match=r"head.keras: takes inputs of shape \(1808,\).*\(5, 5, 1808\)"):
        score.load_scorer(folder)


def test_nothing_scored_gives_its_own_status(scorer, cached_loading, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(broken), str(tmp_path / "missing.png"), "--model", str(scorer), "--output", str(output)]) == score.EXIT_NONE_SCORED
    assert [row["error"] != "" for row in read_rows(output)] == [True, True]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["score", str(empty), "--model", str(scorer), "--output", str(tmp_path / "none.csv")]) == score.EXIT_NONE_SCORED
    assert not (tmp_path / "none.csv").exists()  # a run that scored nothing leaves no file a rerun must --overwrite


def test_exif_rotated_photo_scores_like_the_upright_one(scorer, cached_loading, tmp_path):
    upright = smooth_photo(100, 70, seed=10)
    stored = np.rot90(upright, k=1)  # what a phone stores for orientation 6 (display: rotate 90 degrees clockwise)
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = 6
    rotated = save(stored, tmp_path / "rotated.png", exif=exif)
    plain = save(stored, tmp_path / "stored.png")
    reference = save(upright, tmp_path / "upright.png")
    table = score.score_paths([rotated, reference, plain], scorer, progress=False).set_index("path")
    assert table.loc[str(rotated), "predicted_mos"] == pytest.approx(table.loc[str(reference), "predicted_mos"], rel=1e-5)
    assert table.loc[str(rotated), "predicted_mos"] != pytest.approx(table.loc[str(plain), "predicted_mos"], rel=1e-5)
    assert (table.loc[str(rotated), "scored_width"], table.loc[str(rotated), "scored_height"]) == (100, 70)


def test_16_bit_grey_png_scores_like_its_8_bit_version(scorer, cached_loading, tmp_path):
    grey = smooth_photo(90, 80, seed=11)[..., 0]
    eight = save(grey, tmp_path / "grey8.png")
    sixteen = save((grey.astype(np.uint16) * 257), tmp_path / "grey16.png")
    assert Image.open(sixteen).mode.startswith("I")  # really 16-bit on disk
    table = score.score_paths([eight, sixteen], scorer, progress=False)
    assert table["error"].tolist() == ["", ""]
    assert table.loc[1, "predicted_mos"] == pytest.approx(table.loc[0, "predicted_mos"], rel=1e-6)


def test_old_scorer_json_without_max_side_falls_back_to_ava_size(scorer, tmp_path, capsys):
    config = json.loads((scorer / "scorer.json").read_text())
    assert score.scoring_max_side(score.read_config(scorer), scorer) == 160
    del config["max_side"]
    (tmp_path / "scorer.json").write_text(json.dumps(config))
    assert score.scoring_max_side(score.read_config(tmp_path), tmp_path) == score.FALLBACK_MAX_SIDE == 800
    assert "records no max_side" in capsys.readouterr().err


def test_the_score_scale_is_recorded_in_every_row_and_in_the_summary(head_file, cached_loading, tmp_path, capsys):
    # a scorer trained on KonIQ-10k's 1-5 MOS: its scores must not be read as AVA's 1-10
    folder = score.save_scorer(tmp_path / "koniq", head_file, "efficientnet_lite0", "imagenet", "narrow", trained_on="test", max_side=160, score_min=1, score_max=5)
    assert (score.read_config(folder)["score_min"], score.read_config(folder)["score_max"]) == (1, 5)
    photo = save(smooth_photo(100, 90, seed=2), tmp_path / "a.png")
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(photo), "--model", str(folder), "--output", str(output)]) == score.EXIT_ALL_SCORED
    assert [row["score_scale"] for row in read_rows(output)] == ["1-5"]
    captured = capsys.readouterr()
    assert "predicted_mos on the scorer's 1-5 scale" in captured.out and "records no score scale" not in captured.err

    # an output written before the column existed is resumed: its rows keep an empty (unknown) scale
    second = save(smooth_photo(110, 95, seed=3), tmp_path / "b.png")
    with open(output, "w", newline="") as handle:
        handle.write("path,predicted_mos,error,scored_width,scored_height\n")
        handle.write(f"{photo.resolve()},3.2500,,100,90\n")
    assert cli.main(["score", str(photo), str(second), "--model", str(folder), "--output", str(output), "--resume"]) == score.EXIT_ALL_SCORED
    assert {Path(row["path"]).name: row["score_scale"] for row in read_rows(output)} == {"a.png": "", "b.png": "1-5"}


def test_a_scorer_json_without_a_scale_is_taken_as_avas_with_a_note(scorer, tmp_path, capsys):
    config = json.loads((scorer / "scorer.json").read_text())
    assert "score_min" not in config  # the module's scorer is saved without one, as before the scale was recorded
    (tmp_path / "scorer.json").write_text(json.dumps(config))
    assert score.scoring_scale(score.read_config(tmp_path), tmp_path) == score.FALLBACK_SCORE_SCALE == (1, 10)
    err = capsys.readouterr().err
    assert "records no score scale" in err and "AVA's 1-10 scale" in err


@pytest.mark.parametrize("scale", [{"score_min": 5, "score_max": 1}, {"score_min": 1}, {"score_min": "1", "score_max": 5}, {"score_min": 1, "score_max": float("inf")}])
def test_an_impossible_score_scale_is_refused_naming_the_file(scorer, head_file, tmp_path, scale):
    config = {**json.loads((scorer / "scorer.json").read_text()), **scale}
    (tmp_path / "scorer.json").write_text(json.dumps(config))
    with pytest.raises(score.ScoringError, match=r"scorer.json: score_min and score_max must be finite numbers with score_min < score_max"):
        score.read_config(tmp_path)
    with pytest.raises(ValueError, match="score_min, score_max must be finite numbers"):
        score.save_scorer(tmp_path / "new", head_file, "efficientnet_lite0", "imagenet", "narrow", trained_on="test", **{"score_max": None, **scale})


def test_missing_imagenet_weights_of_the_backbone_are_exit_2_saying_where_to_put_them(tmp_path, monkeypatch, capsys):
    # the authors' heads need Keras' InceptionResNetV2 weights, which no offline machine has
    head = heads.single_1fc(INCEPTION_V3_CHANNELS)
    head.save(tmp_path / "head.keras")
    folder = score.save_scorer(tmp_path / "scorer", tmp_path / "head.keras", "inception_v3", "imagenet", "narrow", trained_on="test", max_side=800, score_min=1, score_max=10)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras home"))
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", lambda *a, **k: (_ for _ in ()).throw(OSError("network unreachable")))
    photo = save(smooth_photo(100, 90, seed=1), tmp_path / "a.png")
    status = cli.main(["score", str(photo), "--model", str(folder), "--output", str(tmp_path / "scores.csv")])
    err = capsys.readouterr().err
    assert status == score.EXIT_USAGE and "Traceback" not in err
    assert err.startswith(f"error: {folder}: cannot load its backbone: inception_v3: Keras could not download its ImageNet weights")
    assert "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in err
    assert f"put it at {tmp_path / 'keras home' / 'models' / 'inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5'}" in err
    assert "weights=<path" not in err and not (tmp_path / "scores.csv").exists()


def test_missing_or_broken_scorer_folder_is_explained(tmp_path):
    with pytest.raises(score.ScoringError, match="not a scorer folder"):
        score.score_paths([tmp_path], tmp_path)
    (tmp_path / "scorer.json").write_text('{"backbone": "efficientnet_lite0", "weights": "imagenet", "kind": "narrow", "max_side": 0}')
    with pytest.raises(score.ScoringError, match="max_side must be a positive integer"):
        score.read_config(tmp_path)
    (tmp_path / "scorer.json").write_text("{not json")
    with pytest.raises(score.ScoringError, match="scorer.json: cannot be read as JSON"):
        score.read_config(tmp_path)


def test_cli_help_states_the_modules_memory_budget_and_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        cli.main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {score.DEFAULT_MEMORY_BUDGET_GB:g} GB" in text
    for status in (score.EXIT_ALL_SCORED, score.EXIT_SOME_SKIPPED, score.EXIT_USAGE, score.EXIT_NONE_SCORED, score.EXIT_CRASHED, score.EXIT_INTERRUPTED):
        assert f" {status} " in text


def test_resume_from_another_directory_does_not_take_one_file_for_another(scorer, cached_loading, monkeypatch, tmp_path):
    """Paths are written absolute; relative rows of older outputs are kept but scored again."""
    output = tmp_path / "scores.csv"
    for place, seed in (("first", 1), ("second", 2)):
        (tmp_path / place / "photos").mkdir(parents=True)
        save(smooth_photo(80, 64, seed=seed), tmp_path / place / "photos" / "same_name.png")
    monkeypatch.chdir(tmp_path / "first")
    assert cli.main(["score", "photos", "--model", str(scorer), "--output", str(output)]) == score.EXIT_ALL_SCORED
    assert read_rows(output)[0]["path"] == str(tmp_path / "first" / "photos" / "same_name.png")
    monkeypatch.chdir(tmp_path / "second")
    table = score.score_paths(["photos"], scorer, output=output, resume=True, progress=False)
    assert table.attrs["already_scored"] == 0  # another file under the same relative name is scored
    assert [row["path"] for row in read_rows(output)] == [str(tmp_path / place / "photos" / "same_name.png") for place in ("first", "second")]

    older = tmp_path / "older.csv"  # an output of an older version: relative paths, three columns
    older.write_text("path,predicted_mos,error\nphotos/same_name.png,9.0,\n")
    table = score.score_paths(["photos"], scorer, output=older, resume=True, progress=False)
    assert table.attrs["already_scored"] == 0 and table["predicted_mos"].iloc[0] != 9.0
    assert [row["path"] for row in read_rows(older)] == ["photos/same_name.png", str(tmp_path / "second" / "photos" / "same_name.png")]


def test_an_output_that_is_one_of_the_photos_is_refused(scorer, cached_loading, tmp_path, capsys):
    photo = save(smooth_photo(70, 60, seed=3), tmp_path / "a.png")
    before = photo.read_bytes()
    for target in (str(photo), str(tmp_path)):
        assert cli.main(["score", target, "--model", str(scorer), "--output", str(photo), "--overwrite"]) == score.EXIT_USAGE
        assert photo.read_bytes() == before and cached_loading == []
    assert "is one of the files to score" in capsys.readouterr().err


def test_a_folder_scan_takes_every_format_pillow_opens_and_reports_broken_links(scorer, cached_loading, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    save(smooth_photo(70, 60, seed=4), photos / "animation.gif")
    save(smooth_photo(70, 60, seed=5), photos / "picture.tga")
    (photos / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (photos / "notes.txt").write_text("not a photo")
    (photos / "document.pdf").write_bytes(b"%PDF-1.4")  # Pillow writes PDFs but cannot open them
    table = score.score_paths([photos], scorer, progress=False).set_index("path")
    names = sorted(Path(path).name for path in table.index)
    assert names == ["animation.gif", "broken.jpg", "picture.tga"]
    assert np.isnan(table.loc[str(photos / "broken.jpg"), "predicted_mos"]) and table["predicted_mos"].notna().sum() == 2


def test_a_head_trained_on_whole_images_scores_the_whole_image(head_file, loaded, cached_loading, tmp_path):
    """A "-aug" row's head (trained on the whole image, one view) is not averaged over crops it never saw."""
    whole = score.save_scorer(tmp_path / "whole", head_file, "efficientnet_lite0", "imagenet", "narrow", trained_on="test", max_side=160, views=1)
    assert json.loads((whole / "scorer.json").read_text())["views"] == 1
    image = smooth_photo(130, 90, seed=6)
    save(image, tmp_path / "x.png")
    table = score.score_paths([tmp_path / "x.png"], whole, progress=False)
    narrow = loaded.forward(loaded.backbone.preprocess(image[None]))["narrow"]
    expected = float(np.asarray(narrow)[0] @ np.full((LITE0_CHANNELS,), 0.01) + 5.0)
    assert table["predicted_mos"].iloc[0] == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(expected_score(loaded, image), rel=1e-5)
    with pytest.raises(ValueError, match="views must be 1"):
        score.save_scorer(tmp_path / "bad", head_file, "efficientnet_lite0", "imagenet", "narrow", trained_on="test", views=4)


def test_a_fifo_or_device_named_like_a_photo_is_skipped_not_waited_on(scorer, cached_loading, tmp_path, capsys, no_hang):
    photos = tmp_path / "photos"
    photos.mkdir()
    save(smooth_photo(100, 90, seed=7), photos / "a.png")
    os.mkfifo(photos / "photo.jpg")
    no_hang(photos / "photo.jpg")
    (photos / "zero.jpg").symlink_to("/dev/zero")
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(photos), "--model", str(scorer), "--output", str(output)]) == score.EXIT_SOME_SKIPPED
    errors = {Path(row["path"]).name: row["error"] for row in read_rows(output)}
    assert errors == {
        "a.png": "",
        "photo.jpg": "a named pipe (FIFO), not a regular file",
        "zero.jpg": "a character device (through a symbolic link to /dev/zero), not a regular file",
    }
    assert f"skipped {photos / 'photo.jpg'}: a named pipe (FIFO), not a regular file" in capsys.readouterr().err


@pytest.fixture
def scorer_with_bias(loaded, monkeypatch, tmp_path):
    """A scorer folder whose head is the module's with another output bias, loaded onto the module's backbone."""
    def make(bias: float):
        head = heads.single_1fc(LITE0_CHANNELS)
        head.layers[-1].set_weights([np.full((LITE0_CHANNELS, 1), 0.01, np.float32), np.array([bias], np.float32)])
        head.save(tmp_path / "biased.keras")
        folder = score.save_scorer(tmp_path / "biased", tmp_path / "biased.keras", "efficientnet_lite0", "imagenet", "narrow", trained_on="test",
                                   max_side=160, score_min=1, score_max=10)
        monkeypatch.setattr(score, "load_scorer", lambda model_dir, cache_dir=None: dataclasses.replace(
            loaded, folder=Path(model_dir), head=score._load_head(Path(model_dir) / "head.keras"), score_scale=(1, 10)))
        return folder
    return make


def test_predictions_outside_the_score_scale_are_flagged_kept_and_counted(scorer_with_bias, tmp_path, capsys):
    folder = scorer_with_bias(1e33)
    for seed in (1, 2):
        save(smooth_photo(100, 90, seed=seed), tmp_path / f"{seed}.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    output = tmp_path / "scores.csv"
    paths = [str(tmp_path / name) for name in ("1.png", "2.png", "broken.jpg")]
    assert cli.main(["score", *paths, "--model", str(folder), "--output", str(output)]) == score.EXIT_SOME_SKIPPED
    rows = {Path(row["path"]).name: row for row in read_rows(output)}
    assert [rows[name]["out_of_range"] for name in ("1.png", "2.png", "broken.jpg")] == ["true", "true", ""]
    assert float(rows["1.png"]["predicted_mos"]) == pytest.approx(1e33, rel=1e-6)  # kept as predicted, never clipped to 10
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: 2 of 2 predictions lie outside the scorer's 1-10 score scale; they are kept, not clipped (see the out_of_range column of {output})"]
    assert pd.read_csv(output)["out_of_range"].tolist()[:2] == [True, True]

    # a resumed run keeps the flags of the rows it takes over, and counts them again
    save(smooth_photo(110, 95, seed=3), tmp_path / "3.png")
    table = score.score_paths([*paths, tmp_path / "3.png"], folder, output=output, progress=False, resume=True)
    assert table["out_of_range"].tolist() == [True, True, None, True] and table.attrs["out_of_range"] == 3
    assert "warning: 3 of 3 predictions lie outside" in capsys.readouterr().err
    assert [row["out_of_range"] for row in read_rows(output)] == ["true", "true", "", "true"]


def test_typical_predictions_are_not_flagged(scorer, cached_loading, tmp_path, capsys):
    for seed in (1, 2):
        save(smooth_photo(100, 90, seed=seed), tmp_path / f"{seed}.png")
    table = score.score_paths([tmp_path / "1.png", tmp_path / "2.png"], scorer, output=tmp_path / "scores.csv", progress=False)
    assert ((table["predicted_mos"] > 1) & (table["predicted_mos"] < 10)).all()
    assert table["out_of_range"].tolist() == [False, False] and table.attrs["out_of_range"] == 0
    assert [row["out_of_range"] for row in read_rows(tmp_path / "scores.csv")] == ["false", "false"]
    assert "warning:" not in capsys.readouterr().err


def test_just_outside_the_scale_is_flagged_and_its_edges_are_not():
    assert [score.outside_scale(value, (1, 10)) for value in (14.2, 0.99, 1.0, 10.0, float("inf"))] == [True, True, False, False, True]


def test_a_head_predicting_nan_is_a_skipped_photo(scorer_with_bias, tmp_path):
    folder = scorer_with_bias(float("nan"))
    save(smooth_photo(100, 90, seed=1), tmp_path / "1.png")
    table = score.score_paths([tmp_path / "1.png"], folder, progress=False)
    assert table["error"].tolist() == ["the head predicted NaN (not a number)"] and score.exit_status(table) == score.EXIT_NONE_SCORED


def test_a_file_name_that_is_not_utf8_is_scored_written_escaped_and_resumed(scorer, cached_loading, monkeypatch, tmp_path, capsys):
    """b'caf\\xe9.png' (a Latin-1 name from a zip) once stopped the run when its row was written."""
    photos = tmp_path / "photos"
    photos.mkdir()
    latin = Path(os.fsdecode(bytes(photos) + b"/caf\xe9.png"))
    save(smooth_photo(80, 64, seed=1), latin)
    save(smooth_photo(80, 64, seed=2), photos / "z.png")
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(photos), "--model", str(scorer), "--output", str(output)]) == score.EXIT_ALL_SCORED
    output.read_bytes().decode("utf-8")  # the CSV stays UTF-8
    rows = read_rows(output)
    assert [row["path"] for row in rows] == [str(photos) + "/caf\\xe9.png", str(photos / "z.png")]
    assert all(row["predicted_mos"] and row["error"] == "" for row in rows)
    decoded, real_load = [], images.load_rgb
    monkeypatch.setattr(images, "load_rgb", lambda path, *a, **k: decoded.append(path) or real_load(path, *a, **k))
    table = score.score_paths([photos], scorer, output=output, resume=True, progress=False)
    assert table.attrs["already_scored"] == 2 and decoded == []  # recognised by the same escaped text
    assert read_rows(output) == rows


def test_an_unexpected_error_is_its_own_exit_status_and_keeps_the_rows(scorer, cached_loading, monkeypatch, tmp_path, capsys):
    paths = [save(smooth_photo(80, 64, seed=seed), tmp_path / f"{seed}.png") for seed in range(3)]
    real_score_file = score.score_file

    def crash_on_second(scorer_, path, *args):
        if path == paths[1]:
            raise RuntimeError("a bug")
        return real_score_file(scorer_, path, *args)

    monkeypatch.setattr(score, "score_file", crash_on_second)
    output = tmp_path / "scores.csv"
    status = cli.main(["score", *map(str, paths), "--model", str(scorer), "--output", str(output)])
    assert status == score.EXIT_CRASHED not in (score.EXIT_SOME_SKIPPED, score.EXIT_NONE_SCORED, score.EXIT_USAGE)
    assert [Path(row["path"]).name for row in read_rows(output)] == ["0.png"]
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: mlsp score stopped on an unexpected error (RuntimeError: a bug)") and "--resume" in last
    assert not Path(f"{output}.lock").exists()


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(scorer, cached_loading, tmp_path, capsys):
    import fcntl

    photo = save(smooth_photo(80, 64, seed=1), tmp_path / "a.png")
    output = tmp_path / "scores.csv"
    with open(f"{output}.lock", "w") as held:  # as the first run holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        for flags in ([], ["--resume"]):
            assert cli.main(["score", str(photo), "--model", str(scorer), "--output", str(output), *flags]) == score.EXIT_USAGE
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2 and all(line.startswith(f"error: {output}: another `mlsp score` is writing it") for line in err)
        assert cached_loading == [] and not output.exists()
    assert cli.main(["score", str(photo), "--model", str(scorer), "--output", str(output), "--resume"]) == score.EXIT_ALL_SCORED
    assert len(read_rows(output)) == 1 and not Path(f"{output}.lock").exists()  # released and removed at the end


def test_a_run_in_another_process_is_refused_and_the_lock_goes_with_a_killed_process(tmp_path):
    output = tmp_path / "scores.csv"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from mlsp import score; f = score.ScoresFile({str(output)!r}); print('held', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(score.ScoringError, match="another `mlsp score` is writing it"):
            score.ScoresFile(output, resume=True)
    finally:
        holder.kill()
        holder.wait()
    score.ScoresFile(output, resume=True).close()  # the system released the killed run's lock


def test_an_output_replaced_during_the_run_is_reported(scorer, cached_loading, monkeypatch, tmp_path, capsys):
    paths = [save(smooth_photo(80, 64, seed=seed), tmp_path / f"{seed}.png") for seed in range(2)]
    output = tmp_path / "scores.csv"
    real_score_file = score.score_file

    def replace_output(scorer_, path, *args):
        if path == paths[1]:
            (tmp_path / "other.csv").write_text("path,predicted_mos\n")
            os.replace(tmp_path / "other.csv", output)  # what a second run's resume rewrite once did
        return real_score_file(scorer_, path, *args)

    monkeypatch.setattr(score, "score_file", replace_output)
    cli.main(["score", *map(str, paths), "--model", str(scorer), "--output", str(output)])
    assert f"warning: {output} is no longer the file this run wrote" in capsys.readouterr().err


def test_resume_with_another_scorer_or_resolution_is_refused(scorer, cached_loading, head_file, tmp_path, capsys):
    photo = save(smooth_photo(80, 64, seed=1), tmp_path / "a.png")
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(photo), "--model", str(scorer), "--output", str(output)]) == score.EXIT_ALL_SCORED
    (row,) = read_rows(output)
    assert (row["scorer"], row["full_resolution"]) == (str(scorer), "false") and len(row["scorer_sha256"]) == 16
    retrained = score.save_scorer(tmp_path / "other", head_file, "efficientnet_lite0", "imagenet", "narrow", trained_on="another set", max_side=160)
    capsys.readouterr()
    cached_loading.clear()
    for model, flags in ((retrained, []), (scorer, ["--full-resolution"])):
        assert cli.main(["score", str(photo), "--model", str(model), "--output", str(output), "--resume", *flags]) == score.EXIT_USAGE
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: {output}: its rows were scored by {scorer} (sha256 {row['scorer_sha256']}, brought to max_side)")
        assert f"this run would score with {model}" in line
    assert read_rows(output) == [row] and cached_loading == []
    moved = tmp_path / "moved"  # the same scorer elsewhere is the same scorer
    moved.mkdir()
    for name in ("scorer.json", "head.keras"):
        (moved / name).write_bytes((scorer / name).read_bytes())
    assert cli.main(["score", str(photo), "--model", str(moved), "--output", str(output), "--resume"]) == score.EXIT_ALL_SCORED

    legacy = tmp_path / "legacy.csv"  # written before the scorer was recorded: resumed, with one warning line
    legacy.write_text(f"path,predicted_mos,error,scored_width,scored_height\n{photo},3.2500,,80,64\n")
    assert cli.main(["score", str(photo), "--model", str(retrained), "--output", str(legacy), "--resume"]) == score.EXIT_ALL_SCORED
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {legacy}: 1 scored rows record no scorer (written before the kit recorded it); they are kept, taken to be by {retrained}"]


def test_linked_subfolders_are_followed_once_and_link_cycles_end(tmp_path):
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    (photos / "b").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (photos / "b" / "1.png", photos / "a.png", elsewhere / "x.png"):
        save(smooth_photo(40, 40, seed=1), path)
    (photos / "linked").symlink_to(elsewhere)
    (photos / "b" / "loop").symlink_to(photos)  # a cycle
    found = score.collect([photos])
    assert found == [photos / "a.png", photos / "b" / "1.png", photos / "linked" / "x.png"]


def test_an_output_that_is_a_symbolic_link_keeps_the_link_and_updates_its_target(scorer, cached_loading, tmp_path):
    photos = [save(smooth_photo(80, 64, seed=seed), tmp_path / f"{seed}.png") for seed in range(2)]
    target, link = tmp_path / "kept" / "scores.csv", tmp_path / "scores.csv"
    target.parent.mkdir()
    link.symlink_to(target)
    assert cli.main(["score", str(photos[0]), "--model", str(scorer), "--output", str(link), "--resume"]) == score.EXIT_ALL_SCORED
    assert cli.main(["score", *map(str, photos), "--model", str(scorer), "--output", str(link), "--resume"]) == score.EXIT_ALL_SCORED
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert [Path(row["path"]).name for row in read_rows(target)] == ["0.png", "1.png"]


def test_metadata_of_other_systems_is_not_scored_and_other_suffixes_are_counted(scorer, cached_loading, tmp_path, capsys):
    photos = tmp_path / "photos"
    for folder in ("__MACOSX", "@eaDir/a.png", "trip"):
        (photos / folder).mkdir(parents=True)
    save(smooth_photo(80, 64, seed=1), photos / "a.png")
    save(smooth_photo(80, 64, seed=2), photos / "trip" / "b.jpg")
    for junk in ("._a.png", "trip/._b.jpg", "__MACOSX/._a.png", "@eaDir/a.png/SYNOPHOTO_THUMB_M.jpg", ".DS_Store", "trip/Thumbs.db"):
        (photos / junk).write_bytes(b"\x00\x05\x16\x07 resource fork")
    (photos / "trip" / "c.HEIC").write_bytes(b"heic")
    (photos / "notes.txt").write_text("not a photo")
    table = score.score_paths([photos], scorer, progress=False)
    assert [Path(path).relative_to(photos).as_posix() for path in table["path"]] == ["a.png", "trip/b.jpg"]
    assert table["error"].tolist() == ["", ""]
    notes = [line for line in capsys.readouterr().err.splitlines() if "suffix" in line]
    assert notes == [f"note: 2 files in the folders skipped for their suffix (not an image type Pillow opens); first: {photos / 'notes.txt'}"]
    named = score.score_paths([photos / "._a.png"], scorer, progress=False)  # named on the command line: still tried
    assert len(named) == 1 and named["error"].iloc[0] != ""


def test_an_escaped_name_and_a_name_with_a_literal_backslash_stay_two_files(scorer, cached_loading, tmp_path):
    """b'caf\\xe9.png' and a file literally named 'caf\\xe9.png' once got one path text, and a resume
    kept one row for both."""
    photos = tmp_path / "photos"
    photos.mkdir()
    save(smooth_photo(80, 64, seed=1), Path(os.fsdecode(bytes(photos) + b"/caf\xe9.png")))
    save(smooth_photo(80, 64, seed=2), photos / "caf\\xe9.png")
    assert score.path_text(photos / "caf\\xe9.png") == str(photos) + "/caf\\\\xe9.png"
    output = tmp_path / "scores.csv"
    first = score.score_paths([photos], scorer, output=output, progress=False)
    rows = read_rows(output)
    assert len(rows) == 2 and len({row["path"] for row in rows}) == 2 and len(first) == 2
    again = score.score_paths([photos], scorer, output=output, resume=True, progress=False)
    assert again.attrs["already_scored"] == 2 and read_rows(output) == rows


def test_one_file_reached_by_two_names_is_scored_once(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    save(smooth_photo(80, 64, seed=1), photos / "a.png")
    (photos / "alias.png").symlink_to(photos / "a.png")
    (tmp_path / "link").symlink_to(photos)
    found, _ = score.scan([photos, tmp_path / "link"])
    assert found == [photos / "a.png"]


def test_an_output_where_no_lock_file_can_be_made_is_written_with_a_warning(tmp_path, monkeypatch, capsys):
    """A scores file bind-mounted into a container, or in a read-only folder: the lock is the only
    thing that cannot be had, and it must not stop the run."""
    output = tmp_path / "scores.csv"
    real_open = os.open

    def read_only_folder(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(score.os, "open", read_only_folder)
    scores = score.ScoresFile(output)
    assert scores.lock is None
    scores.close()
    assert "no lock file can be made" in capsys.readouterr().err
    device = score.ScoresFile("/dev/null", overwrite=True)  # a device: no lock, no resolving, nothing to lose
    assert device.lock is None and str(device.path) == "/dev/null"
    device.close()
