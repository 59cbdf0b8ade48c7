"""Metrics against scipy and by hand."""
import numpy as np
import pytest
from scipy import stats

from mlsp import metrics


def test_against_scipy():
    rng = np.random.default_rng(1)
    true = rng.uniform(2, 8, size=200)
    predicted = true + rng.normal(0, 1, size=200)
    assert metrics.srcc(predicted, true) == pytest.approx(stats.spearmanr(predicted, true)[0])
    assert metrics.plcc(predicted, true) == pytest.approx(np.corrcoef(predicted, true)[0, 1])


def test_by_hand():
    true = np.array([4.0, 5.5, 6.0, 3.0])
    predicted = np.array([5.2, 5.1, 6.5, 2.0])  # right, right, right, right side except the first
    assert metrics.accuracy(predicted, true) == 75.0
    assert metrics.majority_accuracy(true) == 50.0
    assert metrics.majority_accuracy(np.array([6.0, 6.0, 6.0, 4.0])) == 75.0
    assert metrics.srcc([1, 2, 3], [10, 20, 30]) == 1.0
    assert metrics.srcc([3, 2, 1], [10, 20, 30]) == -1.0
    assert metrics.accuracy([5.0], [5.0]) == 100.0  # exactly 5 counts as low on both sides


# ---- bootstrap intervals ---------------------------------------------------------------------

def _reference_interval(statistic, predicted, true, resamples, seed, confidence=0.95):
    """The percentile bootstrap by hand: scipy draws its paired resamples as rows of image indices,
    `metrics.BATCH` rows at a time, from default_rng(seed); the interval is the linear-interpolated
    percentiles of the statistic over them."""
    rng = np.random.default_rng(seed)
    n = len(predicted)
    values = []
    for start in range(0, resamples, metrics.BATCH):
        for rows in rng.integers(0, n, (min(metrics.BATCH, resamples - start), n)):
            values.append(statistic(predicted[rows], true[rows]))
    alpha = (1 - confidence) / 2
    return np.percentile(values, [100 * alpha, 100 * (1 - alpha)])


@pytest.fixture
def scored():
    rng = np.random.default_rng(5)
    true = np.round(rng.uniform(2, 8, size=60), 1)  # rounded: ties, as MOS of few votes have
    predicted = np.round(true + rng.normal(0, 1.2, size=60), 1)
    return predicted, true


@pytest.mark.parametrize("name, statistic", [
    ("srcc", lambda p, t: stats.spearmanr(p, t)[0]),
    ("plcc", lambda p, t: np.corrcoef(p, t)[0, 1]),
    ("accuracy", lambda p, t: 100 * np.mean((p > 5) == (t > 5))),
])
def test_interval_is_the_percentile_bootstrap_of_the_same_resamples(scored, name, statistic):
    predicted, true = scored
    low, high = metrics.interval(name, predicted, true, resamples=250, seed=11)
    assert (low, high) == pytest.approx(tuple(_reference_interval(statistic, predicted, true, 250, 11)), abs=1e-12)
    assert low < getattr(metrics, name)(predicted, true) < high
    assert metrics.interval(name, predicted, true, resamples=250, seed=11) == (low, high)  # seeded
    assert metrics.interval(name, predicted, true, resamples=250, seed=12) != (low, high)


def test_counted_ranks_equal_rankdata_with_ties():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 6, size=30).astype(float)
    positions, distinct = metrics.dense_ranks(values)
    rows = rng.integers(0, 30, (40, 30))
    np.testing.assert_allclose(metrics.average_ranks(positions[rows], distinct), stats.rankdata(values[rows], axis=-1))


def test_accuracy_interval_matches_the_binomial_width():
    # 400 images, 70% on the right side: the binomial standard error is 2.29 points, so a 95%
    # interval spans about +-4.5 around 70.
    true = np.full(400, 7.0)
    predicted = np.where(np.arange(400) < 280, 7.0, 3.0)
    low, high = metrics.interval("accuracy", predicted, true, resamples=2000, seed=0)
    half_width = 1.96 * 100 * np.sqrt(0.7 * 0.3 / 400)
    assert low == pytest.approx(70 - half_width, abs=0.8) and high == pytest.approx(70 + half_width, abs=0.8)


def test_interval_refusals(scored):
    predicted, true = scored
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.interval("rmse", predicted, true)
    with pytest.raises(ValueError, match="59 predictions for 60"):
        metrics.interval("srcc", predicted[1:], true)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.interval("plcc", predicted[:1], true[:1])
    with pytest.raises(ValueError, match="resamples"):
        metrics.interval("plcc", predicted, true, resamples=0)


def test_evaluate_gives_each_metric_its_interval_and_counts_out_of_range(scored):
    predicted, true = scored
    predicted = predicted.copy()
    predicted[:3] = [0.5, 10.5, 12.0]  # a linear head is unbounded: these are counted, not clipped
    found = metrics.evaluate(predicted, true, resamples=200, seed=3)
    for name in metrics.INTERVAL_METRICS:
        assert found[f"{name}_low"] <= found[name] <= found[f"{name}_high"]
        assert (found[f"{name}_low"], found[f"{name}_high"]) == metrics.interval(name, predicted, true, 200, 3)
    assert found["out_of_range"] == 3 and found["srcc"] == metrics.srcc(predicted, true)
    assert metrics.out_of_range([1.0, 10.0, 5.0]) == 0  # the scale's ends are inside it
    assert "srcc_low" not in metrics.evaluate(predicted, true, resamples=0)


def test_evaluate_at_another_threshold_and_range_moves_accuracy_majority_and_out_of_range():
    true = np.array([2.5, 3.5, 4.5, 4.0, 2.0, 3.2])
    predicted = np.array([3.5, 3.4, 5.5, 3.9, 1.5, 0.5])
    at_five = metrics.evaluate(predicted, true, resamples=0)  # AVA's default: every MOS is low, so is all but one prediction
    assert at_five["accuracy"] == pytest.approx(100 * 5 / 6) and at_five["majority_accuracy"] == 100.0 and at_five["out_of_range"] == 1
    at_three = metrics.evaluate(predicted, true, resamples=0, threshold=3, score_range=(1, 5))
    # MOS > 3: true high = 3.5, 4.5, 4.0, 3.2; predicted high = 3.5, 3.4, 5.5, 3.9 -> wrong on 2.5 and 3.2
    assert at_three["accuracy"] == pytest.approx(100 * 4 / 6) == metrics.accuracy(predicted, true, threshold=3)
    assert at_three["majority_accuracy"] == pytest.approx(100 * 4 / 6)
    assert at_three["out_of_range"] == 2  # 5.5 above 5, 0.5 below 1
    assert at_three["srcc"] == at_five["srcc"] and at_three["plcc"] == at_five["plcc"]  # the scale moves no correlation


def test_the_accuracy_interval_follows_the_threshold(scored):
    predicted, true = scored
    found = metrics.evaluate(predicted, true, resamples=250, seed=11, threshold=4.0)
    reference = _reference_interval(lambda p, t: 100 * np.mean((p > 4) == (t > 4)), predicted, true, 250, 11)
    assert (found["accuracy_low"], found["accuracy_high"]) == pytest.approx(tuple(reference), abs=1e-12)
    assert (found["accuracy_low"], found["accuracy_high"]) == metrics.interval("accuracy", predicted, true, 250, 11, threshold=4.0)
    assert found["accuracy"] == metrics.accuracy(predicted, true, 4.0) != metrics.accuracy(predicted, true)
    at_five = metrics.evaluate(predicted, true, resamples=250, seed=11)  # the default is AVA's, as before
    assert (at_five["accuracy_low"], at_five["accuracy_high"]) == metrics.interval("accuracy", predicted, true, 250, 11)
    assert (at_five["srcc_low"], at_five["srcc_high"]) == (found["srcc_low"], found["srcc_high"])  # same draws


def test_paired_difference_is_the_bootstrap_of_the_difference_on_shared_resamples(scored):
    predicted, true = scored
    other = np.round(true + np.random.default_rng(9).normal(0, 2.0, size=60), 1)
    difference, low, high = metrics.paired_difference(predicted, other, true, resamples=300, seed=4)
    assert difference == pytest.approx(metrics.srcc(predicted, true) - metrics.srcc(other, true))

    def paired(rows_a_b_true):
        return stats.spearmanr(rows_a_b_true[0], rows_a_b_true[2])[0] - stats.spearmanr(rows_a_b_true[1], rows_a_b_true[2])[0]

    stacked = np.stack([predicted, other, true], axis=1)  # one image per line: resampled together
    reference = _reference_interval(lambda rows, _: paired(rows.T), stacked, np.zeros(60), 300, 4)
    assert (low, high) == pytest.approx(tuple(reference), abs=1e-12)
