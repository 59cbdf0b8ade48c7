"""The paper's metrics on predicted vs true MOS: SRCC, PLCC and binary accuracy at MOS 5."""
from __future__ import annotations

import numpy as np
from scipy import stats

THRESHOLD = 5.0


def srcc(predicted, true) -> float:
    return float(stats.spearmanr(predicted, true).statistic)


def plcc(predicted, true) -> float:
    return float(stats.pearsonr(predicted, true).statistic)


def accuracy(predicted, true, threshold: float = THRESHOLD) -> float:
    """Percent of images on the right side of the threshold (high quality = MOS > 5)."""
    predicted, true = np.asarray(predicted), np.asarray(true)
    return float(100.0 * np.mean((predicted > threshold) == (true > threshold)))


def majority_accuracy(true, threshold: float = THRESHOLD) -> float:
    """Accuracy of always answering the larger class (71.08% on AVA's test set)."""
    high = float(np.mean(np.asarray(true) > threshold))
    return 100.0 * max(high, 1.0 - high)


def evaluate(predicted, true) -> dict:
    return {
        "srcc": srcc(predicted, true),
        "plcc": plcc(predicted, true),
        "accuracy": accuracy(predicted, true),
        "majority_accuracy": majority_accuracy(true),
    }
