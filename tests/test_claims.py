"""The paper's claims as paired comparisons: planted differences are found, absent ones are not."""
import numpy as np
import pandas as pd
import pytest

from mlsp import claims, metrics

BACKBONE = "efficientnet_lite0"


def _lines(table, row, ids, true, predicted, finetune=False, seed=0):
    return pd.DataFrame({"table": table, "row": row, "finetune": finetune, "seed": seed, "backbone": BACKBONE, "image_id": ids, "true_mos": true, "predicted_mos": predicted})


@pytest.fixture
def true_mos():
    return np.random.default_rng(0).uniform(2, 8, size=300)


def _noisy(true, spread, seed):
    return true + np.random.default_rng(seed).normal(0, spread, size=len(true))


def test_verdicts_of_planted_absent_and_reversed_differences(true_mos):
    ids = [f"{i:06d}" for i in range(300)]
    good, poor = _noisy(true_mos, 0.8, 1), _noisy(true_mos, 3.0, 2)  # SRCC ~0.9 against ~0.5
    twin = _noisy(true_mos, 0.8, 3)  # as good as `good`, other noise
    predictions = pd.concat([
        _lines("Table 3", "Pool-3FC", ids, true_mos, good), _lines("Table 3", "Single-3FC", ids, true_mos, poor),
        _lines("Table 3", "Pool-3FC (-aug)", ids, true_mos, poor), _lines("Table 3", "Single-3FC (-aug)", ids, true_mos, good),
        _lines("Table 2", "Single-1FC (all)", ids, true_mos, good), _lines("Table 2", "Single-1FC (5)", ids, true_mos, twin),
    ], ignore_index=True)
    table = claims.claims_table(predictions, resamples=500, seed=0).set_index(["a", "b"])
    t3 = t2 = f"[{BACKBONE}]"
    planted = table.loc[(f"Table 3: Pool-3FC {t3}", f"Table 3: Single-3FC {t3}")]
    assert planted["verdict"] == "supported" and planted["low"] > 0 and planted["difference"] > 0.2
    assert planted["note"] == "one training seed: provisional"
    reversed_ = table.loc[(f"Table 3: Pool-3FC (-aug) {t3}", f"Table 3: Single-3FC (-aug) {t3}")]
    assert reversed_["verdict"] == "contradicted" and reversed_["high"] < 0
    absent = table.loc[(f"Table 2 features: Single-1FC (all) {t2}", f"Table 2 features: Single-1FC (5) {t2}")]
    assert absent["verdict"] == "not resolved at this size" and absent["low"] < 0 < absent["high"]
    assert set(table[table["verdict"] != "not run"]["images"]) == {300}
    # 8 views vs none for Table 3: Single-3FC (aug, poor) vs (-aug, good) is in the table, the paper's direction first
    assert table.loc[(f"Table 3: Single-3FC {t3}", f"Table 3: Single-3FC (-aug) {t3}")]["verdict"] == "contradicted"


def test_paired_interval_is_narrower_than_either_rows_own(true_mos):
    # Two models that share most of their errors: each SRCC is uncertain, their difference much less.
    shared = _noisy(true_mos, 1.5, 4)
    a, b = shared + _noisy(np.zeros(300), 0.2, 5), shared + _noisy(np.zeros(300), 0.4, 6)
    _, low, high = metrics.paired_difference(a, b, true_mos, resamples=500, seed=0)
    own_low, own_high = metrics.interval("srcc", a, true_mos, resamples=500, seed=0)
    assert high - low < (own_high - own_low) / 2


def test_rows_of_two_tables_are_compared_on_the_images_they_share(true_mos):
    ids = np.array([f"{i:06d}" for i in range(300)])
    full, rescaled = _noisy(true_mos, 0.5, 7), _noisy(true_mos, 2.5, 8)
    predictions = pd.concat([
        _lines("Table 3", "Single-3FC", ids[:250], true_mos[:250], full[:250]),  # Table 3 lost 50 images in extraction
        _lines("Table 2", "Single-3FC", ids[20:], true_mos[20:], rescaled[20:]),  # Table 2 lost 20 others
    ], ignore_index=True)
    table = claims.claims_table(predictions, resamples=200, seed=0)
    table = table[table["verdict"] != "not run"]  # the other rows of both tables were not run
    assert list(table["claim"]) == ["full resolution beats rescaled input"]
    line = table.iloc[0]
    assert line["images"] == 230 and line["verdict"] == "supported"
    assert line["srcc_a"] == pytest.approx(metrics.srcc(full[20:250], true_mos[20:250]))
    assert "230 test images" in claims.sentence(line)


def test_claims_need_both_rows_and_agreeing_true_mos(true_mos):
    ids = [str(i) for i in range(300)]
    only_one = _lines("Table 3", "Pool-3FC", ids, true_mos, true_mos)
    unrun = claims.claims_table(only_one)
    assert list(unrun["verdict"]) == ["not run"] * len(unrun) and len(unrun) >= 1
    assert "Table 3: Single-3FC [efficientnet_lite0] not run" in unrun.iloc[0]["note"]
    assert claims.claims_table(only_one.iloc[:0]).empty
    wrong = pd.concat([_lines("Table 3", "Pool-3FC", ids, true_mos, true_mos), _lines("Table 3", "Single-3FC", ids, true_mos + 1, true_mos)], ignore_index=True)
    with pytest.raises(ValueError, match="different true MOS"):
        claims.claims_table(wrong)


def test_prediction_files_read_back_with_their_ids(tmp_path, true_mos):
    ids = [f"{i:06d}" for i in range(300)]
    table2 = pd.concat([
        _lines("", "Single-1FC (5)", ids, true_mos, _noisy(true_mos, 1, 1)).assign(finetune="no"),
        _lines("", "Single-1FC (5)", ids, true_mos, _noisy(true_mos, 1, 2)).assign(finetune="yes"),
    ]).drop(columns="table")
    table2.to_csv(tmp_path / "table2_predictions.csv", index=False)
    predictions = claims.load_predictions(tmp_path)
    assert predictions["image_id"].iloc[0] == "000000" and set(predictions["table"]) == {"Table 2"}
    assert [(c.better.name, c.worse.name) for c in claims.paper_claims(predictions)] == [
        (f"Table 2 fine-tuned: Single-1FC (5) [{BACKBONE}]", f"Table 2 features: Single-1FC (5) [{BACKBONE}]")
    ]
    assert claims.load_predictions(tmp_path / "nothing").empty


def test_verdict_edges():
    assert claims.verdict(0.01, 0.2) == "supported"
    assert claims.verdict(-0.2, -0.01) == "contradicted"
    assert claims.verdict(-0.1, 0.1) == claims.verdict(0.0, 0.1) == "not resolved at this size"


def test_a_claim_is_supported_only_when_every_seed_supports_it(true_mos):
    ids = [f"{i:06d}" for i in range(300)]
    good, poor, twin = _noisy(true_mos, 0.8, 1), _noisy(true_mos, 3.0, 2), _noisy(true_mos, 0.8, 3)
    predictions = pd.concat([
        _lines("Table 3", "Pool-3FC", ids, true_mos, good, seed=0), _lines("Table 3", "Single-3FC", ids, true_mos, poor, seed=0),
        _lines("Table 3", "Pool-3FC", ids, true_mos, twin, seed=1), _lines("Table 3", "Single-3FC", ids, true_mos, poor + 0.1, seed=1),
        _lines("Table 2", "Single-1FC (all)", ids, true_mos, good, seed=0), _lines("Table 2", "Single-1FC (5)", ids, true_mos, poor, seed=0),
        _lines("Table 2", "Single-1FC (all)", ids, true_mos, poor, seed=1), _lines("Table 2", "Single-1FC (5)", ids, true_mos, good, seed=1),
    ], ignore_index=True)
    table = claims.claims_table(predictions, resamples=300, seed=0).set_index(["a", "b"], drop=False)
    wide = table.loc[(f"Table 3: Pool-3FC [{BACKBONE}]", f"Table 3: Single-3FC [{BACKBONE}]")]
    assert wide["verdict"] == "supported" and wide["seeds"] == 2 and wide["seed_verdicts"].count("supported") == 2 and wide["note"] == ""
    flipped = table.loc[(f"Table 2 features: Single-1FC (all) [{BACKBONE}]", f"Table 2 features: Single-1FC (5) [{BACKBONE}]")]
    assert flipped["verdict"] == "not resolved at this size" and flipped["note"] == "the seeds disagree"
    assert "seed 0: supported" in flipped["seed_verdicts"] and "seed 1: contradicted" in flipped["seed_verdicts"]
    assert flipped["difference"] > 0.2  # the first seed's, as the tables report it
    assert "per seed" in claims.sentence(flipped)
    # fine-tuning was not run, but Table 2 ran for this backbone: its claim is listed, not dropped
    unrun = table.loc[(f"Table 2 fine-tuned: Single-1FC (5) [{BACKBONE}]", f"Table 2 features: Single-1FC (5) [{BACKBONE}]")]
    assert unrun["verdict"] == "not run" and "fine-tuned: Single-1FC (5)" in unrun["note"] and "not run" in claims.sentence(unrun)


def test_seeds_pair_with_themselves_or_else_in_order():
    assert claims.seed_pairs([0, 1, 0], [1, 0]) == [(0, 0), (1, 1)]
    assert claims.seed_pairs([0], [0, 1]) == [(0, 0)]
    assert claims.seed_pairs([5], [0, 1]) == [(5, 0)]
