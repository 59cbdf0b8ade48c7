"""Scoring new photos with a saved scorer: full resolution, 8 crops, bad files skipped."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mlsp import backbones, cli, features, heads, score


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scorer")
    head = heads.single_1fc(1808)
    head.layers[-1].set_weights([np.full((1808, 1), 0.01, np.float32), np.array([5.0], np.float32)])
    head.save(folder / "trained.keras")
    return score.save_scorer(folder / "model", folder / "trained.keras", "efficientnet_lite0", "imagenet", "narrow", trained_on="test")


def test_scores_folder_and_skips_bad_files(scorer, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.jpg", (120, 90)), ("b.png", (64, 100))):
        Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)).save(photos / name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    output = tmp_path / "scores.csv"
    assert cli.main(["score", str(photos), "--model", str(scorer), "--output", str(output)]) == 0
    table = pd.read_csv(output).set_index("path")
    assert table["predicted_mos"].notna().sum() == 2
    assert np.isnan(table.loc[str(photos / "broken.jpg"), "predicted_mos"])
    error = table.loc[str(photos / "broken.jpg"), "error"]
    assert isinstance(error, str) and error  # the reason is kept beside the path


def test_score_is_the_mean_over_the_eight_full_resolution_crops(scorer, tmp_path):
    image = np.random.default_rng(1).integers(0, 255, size=(90, 130, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    table = score.score_paths([tmp_path / "x.png"], scorer, progress=False)
    backbone = backbones.load("efficientnet_lite0", "imagenet")
    narrow = features.mlsp_model(backbone, kinds=("narrow",)).predict_on_batch(backbone.preprocess(features.augmented_views(image)))["narrow"]
    expected = float(np.mean(narrow @ np.full((1808,), 0.01) + 5.0))
    assert table["predicted_mos"].iloc[0] == pytest.approx(expected, rel=1e-4)


def test_missing_scorer_folder_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a scorer folder"):
        score.score_paths([tmp_path], tmp_path)
