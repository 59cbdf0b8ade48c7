"""Rows are chosen on the validation set, never on the test set; tables carry intervals and counts."""
import keras
import numpy as np
import pandas as pd
import pytest

from mlsp import experiments, train
from mlsp.store import FeatureWriter, store_path


def _result(label, validation_loss, srcc, backbone="lite"):
    return {"label": label, "backbone": backbone, "weights": "random", "epochs": 3, "validation_loss": validation_loss,
            "srcc": srcc, "srcc_low": srcc - 0.1, "srcc_high": srcc + 0.1, "plcc": srcc, "accuracy": 70.0,
            "majority_accuracy": 60.0, "out_of_range": 0, "predicted": np.array([5.0, 6.0]), "true": np.array([5.5, 6.5]), "seed": 0}


def test_the_lowest_validation_loss_is_chosen_not_the_best_test_srcc():
    results = [_result("Single-3FC", 0.40, 0.71), _result("Pool-3FC", 0.31, 0.64), _result("Pool-3FC (-aug)", 0.35, 0.75, backbone="other")]
    best = experiments.best_by_validation(results)
    assert best["label"] == "Pool-3FC" and max(results, key=lambda r: r["srcc"])["label"] == "Pool-3FC (-aug)"
    record = experiments.selection_record(best)
    assert record == {"backbone": "lite", "label": "Pool-3FC", "selected_by": "validation_loss", "validation_loss": 0.31, "test_srcc": 0.64}


def test_rows_without_a_validation_loss_are_never_chosen():
    fine_tuned = {key: value for key, value in _result("fine-tuned", 0, 0.9).items() if key != "validation_loss"}
    assert experiments.best_by_validation([fine_tuned, _result("a", np.nan, 0.8), _result("b", 0.5, 0.1)])["label"] == "b"
    with pytest.raises(ValueError, match="validation loss"):
        experiments.best_by_validation([fine_tuned])


def test_tables_put_each_interval_beside_its_metric_and_count_out_of_range():
    old = {key: value for key, value in _result("no intervals", 0.4, 0.5).items() if not key.endswith(("_low", "_high"))}
    table = experiments.results_table([_result("Single-3FC", 0.4, 0.7), old], {"Single-3FC": (0.676, 0.682, 79.3)})
    columns = list(table.columns)
    assert columns[columns.index("srcc"):columns.index("srcc") + 3] == ["srcc", "srcc_low", "srcc_high"]
    assert {"plcc_low", "accuracy_high", "out_of_range", "validation_loss", "paper_srcc"} <= set(columns)
    assert table.loc[0, "srcc_low"] == pytest.approx(0.6) and np.isnan(table.loc[1, "srcc_low"])
    assert np.isnan(experiments.metrics_tree([old])["no intervals"]["plcc_high"])


def test_parameter_counts_stay_integers_beside_an_empty_table():
    """Table 2 without fine-tuning concatenates the feature rows with an empty table; the count must not
    become a float (6.07898e+06 in the CSV)."""
    table = experiments.results_table([{**_result("Single-3FC", 0.4, 0.7), "parameters": 6078977}])
    both = pd.concat([table.assign(finetune="no"), experiments.results_table([]).assign(finetune="yes")], ignore_index=True)
    assert both.to_csv(index=False).splitlines()[1].split(",")[3] == "6078977"


def test_row_predictions_are_long_and_keyed_by_image():
    metadata = pd.DataFrame({"image_id": ["007", "008", "009", "010"], "mos": [4.0, 5.0, 5.5, 6.5], "width": 100, "height": 100, "set": ["train", "validation", "test", "test"]})
    split = experiments.Split(metadata, np.array([0]), np.array([1]), np.array([2, 3]))
    table = experiments.row_predictions([_result("a", 0.1, 0.5), _result("b", 0.2, 0.4)], split, finetune="no")
    assert list(table.columns) == ["row", "finetune", "seed", "backbone", "image_id", "true_mos", "predicted_mos"]
    assert list(table["image_id"]) == ["009", "010", "009", "010"] and list(table["row"]) == ["a", "a", "b", "b"]
    seeded = experiments.with_seed_spread([_result("a", 0.1, 0.5), {**_result("a", 0.2, 0.3), "seed": 1, "predicted": np.array([7.0, 8.0])}])
    per_seed = experiments.row_predictions([seeded], split)
    assert list(per_seed["seed"]) == [0, 0, 1, 1] and list(per_seed["predicted_mos"]) == [5.0, 6.0, 7.0, 8.0]
    with pytest.raises(ValueError, match="3 test images"):
        experiments.row_predictions([_result("a", 0.1, 0.5)], experiments.Split(metadata, np.array([0]), np.array([1]), np.array([1, 2, 3])))


def _single_1fc_store(tmp_path):
    ids = [str(100 + index) for index in range(24)]
    votes = {f"votes_{score}": [10] * 24 for score in range(1, 11)}
    metadata = pd.DataFrame({"image_id": ids, **votes, "n_votes": 100, "mos": np.linspace(3, 7, 24), "mos_std": 1.0, "width": 100, "height": 100,
                             "set": ["train"] * 8 + ["validation"] * 8 + ["test"] * 8})
    metadata.to_csv(tmp_path / "metadata.csv", index=False)
    row = experiments.TABLE2_FEATURE_ROWS[3]  # Single-1FC, 8 views
    rng = np.random.default_rng(0)
    with FeatureWriter(store_path(tmp_path / "features", "lite", row.mode, row.kind, row.augment), ids, 8, (6,), {"block_boundaries": np.array([0, 2, 6]), "weights": "random"}) as writer:
        for index in range(24):
            writer.write(index, rng.normal(size=(8, 6)))
    split, _ = experiments.usable_split(tmp_path / "metadata.csv", experiments.row_stores([row], tmp_path / "features", ["lite"]))
    return row, split


def test_validation_loss_is_the_restored_weights_mse_on_validation_views_averaged(tmp_path):
    row, split = _single_1fc_store(tmp_path)
    model_path = tmp_path / "head.keras"
    result = experiments.run_feature_row(row, split, tmp_path / "features", "lite", train.Protocol(max_epochs=3, batch_size=4), seed=0, model_path=model_path)
    features, _ = train.load_features(store_path(tmp_path / "features", "lite", row.mode, row.kind, row.augment))
    again = train.predict(keras.models.load_model(model_path), features, split.validation)
    assert result["validation_loss"] == pytest.approx(float(np.mean((again - split.mos[split.validation]) ** 2)), rel=1e-5)
    assert result["srcc_low"] <= result["srcc"] <= result["srcc_high"] and result["out_of_range"] >= 0


def test_seeds_repeat_a_row_and_report_the_spread_beside_the_first_run(tmp_path):
    """seeds=3 trains the row with seeds 0, 1, 2: the result is seed 0's (the same numbers as seeds=1,
    the model saved once), and the spread is numpy's mean and sample standard deviation of the three
    runs' metrics, each run being what seeds=1 with that seed gives."""
    row, split = _single_1fc_store(tmp_path)
    protocol = train.Protocol(max_epochs=2, batch_size=4)
    model_path = tmp_path / "models" / "head.keras"
    repeated = experiments.run_feature_row(row, split, tmp_path / "features", "lite", protocol, seed=0, model_path=model_path, seeds=3)
    singles = [experiments.run_feature_row(row, split, tmp_path / "features", "lite", protocol, seed=seed) for seed in (0, 1, 2)]
    assert repeated["seeds"] == 3 and singles[0]["seeds"] == 1 and np.isnan(singles[0]["srcc_seeds_sd"])
    np.testing.assert_allclose(repeated["predicted"], singles[0]["predicted"], rtol=1e-6)
    assert sorted(path.name for path in model_path.parent.iterdir()) == ["head.json", "head.keras"]
    for name in ("srcc", "plcc", "accuracy"):
        values = np.array([single[name] for single in singles])
        assert repeated[f"{name}_seeds_mean"] == pytest.approx(values.mean(), abs=1e-6)
        assert repeated[f"{name}_seeds_sd"] == pytest.approx(values.std(ddof=1), abs=1e-6)
    assert len({round(single["srcc"], 6) for single in singles}) > 1  # the seeds really differ
    line = experiments.results_table([repeated]).iloc[0]
    assert line["seeds"] == 3 and line["srcc_seeds_sd"] == pytest.approx(repeated["srcc_seeds_sd"])
    with pytest.raises(ValueError, match="seeds"):
        experiments.run_feature_row(row, split, tmp_path / "features", "lite", protocol, seed=0, seeds=0)


def test_readme_rows_show_the_seed_spread_only_for_rows_trained_with_several_seeds():
    from mlsp import report

    once = {"srcc": 0.5, "srcc_low": 0.4, "srcc_high": 0.6, "seeds": 1, "srcc_seeds_mean": 0.5, "srcc_seeds_sd": None}
    thrice = dict(once, seeds=3, srcc_seeds_mean=0.48, srcc_seeds_sd=0.031)
    assert report._with_interval(once, "srcc") == "0.500 [0.40, 0.60]"
    assert report._with_interval(thrice, "srcc") == "0.500 [0.40, 0.60]; 0.48 ± 0.03 over 3 seeds"
