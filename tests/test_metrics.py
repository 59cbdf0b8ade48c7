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
