"""The paper's metrics on predicted vs true MOS: SRCC, PLCC and binary accuracy at MOS 5, each with a
95% bootstrap confidence interval over the test images. Another data set's scale moves the threshold
and the range `out_of_range` counts against (`evaluate`'s threshold and score_range; AVA's by default).

Intervals: scipy.stats.bootstrap, paired (an image's predicted and true MOS are resampled together),
RESAMPLES resamples drawn from the run's seed, percentile method. Percentile rather than BCa: BCa's
jackknife evaluates the statistic once per left-out image, which on AVA's ~20,000 test images costs
20,000 extra SRCCs per row, and on the demo's ~100 images its acceleration estimate is itself noisy.
At the demo's 105 test images an SRCC interval spans about +-0.08 to +-0.2: differences between rows smaller than that
say nothing, which is why `mlsp.claims` compares rows by a paired interval of their difference.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats

THRESHOLD = 5.0  # AVA's (the paper's); other data sets state theirs (mlsp.data.ScoreScale)
MOS_RANGE = (1.0, 10.0)  # AVA's rating scale: a prediction outside it is counted, never clipped
RESAMPLES = 1000  # SRCC, PLCC and accuracy intervals of a row: ~0.04 s at 78 test images, 3-6 s at AVA's 20,000
CONFIDENCE = 0.95
BATCH = 100  # resamples evaluated at once: bounds memory at AVA's size (100 x 20,000 per array)
INTERVAL_METRICS = ("srcc", "plcc", "accuracy")


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


def out_of_range(predicted, low: float = MOS_RANGE[0], high: float = MOS_RANGE[1]) -> int:
    """How many predictions lie outside the rating scale [low, high] (a linear head is not bounded)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    return int(np.count_nonzero((predicted < low) | (predicted > high)))


# ---- the metrics on many resamples at once (last axis = images), for the bootstrap --------------


def pearson_along(x, y, axis: int = -1) -> np.ndarray:
    """Pearson's r along `axis` of two arrays of one shape; NaN where either side is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=axis) / np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))


def dense_ranks(values) -> tuple[np.ndarray, int]:
    """Each value's position among the distinct values (ties share one), and how many there are.

    SRCC depends only on order, so the bootstrap resamples these integers instead of the values:
    the ranks of a resample then come from counting, not sorting (`average_ranks`)."""
    distinct, positions = np.unique(np.asarray(values), return_inverse=True)
    return positions.reshape(-1), len(distinct)


def average_ranks(positions: np.ndarray, n_distinct: int) -> np.ndarray:
    """scipy.stats.rankdata(method="average") along the last axis of dense ranks [..., n] < n_distinct.

    Counting each distinct value's copies per row and accumulating them costs O(n) per row where a
    sort costs O(n log n): an SRCC interval on 20,000 images (1,000 resamples) took 3-5 s this way
    against 17-20 s with rankdata, on 2 shared cores."""
    positions = np.asarray(positions)
    shape = positions.shape
    rows = positions.reshape(-1, shape[-1])
    flat = (rows + np.arange(len(rows))[:, None] * n_distinct).ravel()  # one bin per (row, distinct value)
    counts = np.bincount(flat, minlength=len(rows) * n_distinct).reshape(len(rows), n_distinct)
    average = np.cumsum(counts, axis=1) - (counts - 1) / 2.0  # a tie group's copies share the mean of the ranks they cover
    return average.ravel()[flat].reshape(shape)


def _spearman_of_positions(n_predicted: int, n_true: int) -> Callable:
    def statistic(predicted_positions, true_positions, axis=-1):
        return pearson_along(average_ranks(predicted_positions, n_predicted), average_ranks(true_positions, n_true), axis=axis)

    return statistic


def accuracy_along(predicted, true, axis: int = -1, threshold: float = THRESHOLD) -> np.ndarray:
    return 100.0 * np.mean((np.asarray(predicted) > threshold) == (np.asarray(true) > threshold), axis=axis)


def agreement_along(predicted_labels, true_labels, axis: int = -1) -> np.ndarray:
    """Percent of equal labels (a classifier's accuracy, as the resolution-only network's)."""
    return 100.0 * np.mean(np.asarray(predicted_labels) == np.asarray(true_labels), axis=axis)


def _bootstrap(data: tuple, statistic: Callable, resamples: int, seed: int, confidence: float) -> tuple[float, float]:
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: draw at least one resample")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}: must lie in (0, 1)")
    if len(data[0]) < 2:
        raise ValueError(f"{len(data[0])} image(s): a bootstrap needs at least 2")
    result = stats.bootstrap(
        data, statistic, n_resamples=resamples, paired=True, vectorized=True, batch=BATCH,
        confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def interval(metric: str | Callable, predicted, true, resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE, threshold: float = THRESHOLD) -> tuple[float, float]:
    """The percentile bootstrap interval (low, high) of a metric over images: `resamples` resamples
    of the (predicted, true) pairs with replacement, drawn from numpy's default_rng(seed).

    metric: "srcc", "plcc", "accuracy" (percent, as `accuracy` at `threshold`), or a function
    f(predicted, true, axis=-1) computing the metric along the last axis of arrays [resamples, images].
    predicted, true: 1-D, one value per image, same length >= 2.
    Returns NaN bounds when resamples are degenerate (e.g. constant predictions give no SRCC).
    Raises ValueError for an unknown metric name, mismatched lengths, fewer than 2 images,
    resamples < 1, or confidence outside (0, 1)."""
    predicted, true = np.asarray(predicted).reshape(-1), np.asarray(true).reshape(-1)
    if len(predicted) != len(true):
        raise ValueError(f"{len(predicted)} predictions for {len(true)} true values")
    if metric == "srcc":
        (p, n_p), (t, n_t) = dense_ranks(predicted), dense_ranks(true)
        return _bootstrap((p, t), _spearman_of_positions(n_p, n_t), resamples, seed, confidence)
    functions = {"plcc": pearson_along, "accuracy": lambda p, t, axis=-1: accuracy_along(p, t, axis, threshold)}
    if isinstance(metric, str) and metric not in functions:
        raise ValueError(f"unknown metric {metric!r}: one of srcc, plcc, accuracy, or a function")
    return _bootstrap((predicted, true), functions.get(metric, metric), resamples, seed, confidence)


def paired_difference(predicted_a, predicted_b, true, resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """SRCC(a) - SRCC(b) on the same images, and its percentile bootstrap interval (low, high):
    each resample draws one set of images and scores both models on it, so what the two share (the
    images' difficulty) cancels, and the interval is narrower than either SRCC's own.

    predicted_a, predicted_b, true: 1-D, aligned image by image, same length >= 2.
    Raises ValueError for mismatched lengths, fewer than 2 images, resamples < 1 or a bad confidence."""
    a, b, true = (np.asarray(x).reshape(-1) for x in (predicted_a, predicted_b, true))
    if not len(a) == len(b) == len(true):
        raise ValueError(f"unaligned: {len(a)}, {len(b)} predictions for {len(true)} true values")
    (pa, n_a), (pb, n_b), (t, n_t) = dense_ranks(a), dense_ranks(b), dense_ranks(true)

    def statistic(pa, pb, t, axis=-1):
        ranks_t = average_ranks(t, n_t)
        return pearson_along(average_ranks(pa, n_a), ranks_t, axis) - pearson_along(average_ranks(pb, n_b), ranks_t, axis)

    low, high = _bootstrap((pa, pb, t), statistic, resamples, seed, confidence)
    return srcc(a, true) - srcc(b, true), low, high


def evaluate(predicted, true, resamples: int = RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE, threshold: float = THRESHOLD, score_range: tuple[float, float] = MOS_RANGE) -> dict:
    """SRCC, PLCC, accuracy (percent, MOS > threshold), each with `<name>_low` and `<name>_high` (its
    bootstrap interval; left out when resamples=0, NaN for fewer than 2 images), the majority baseline
    at the same threshold, and `out_of_range`: how many predictions fall outside score_range (counted,
    not clipped: the metrics use them as predicted). predicted, true: 1-D MOS, one per test image.
    threshold, score_range: the data set's scale (mlsp.data.ScoreScale); AVA's 5 and 1-10 by default."""
    values = {"srcc": srcc(predicted, true), "plcc": plcc(predicted, true), "accuracy": accuracy(predicted, true, threshold)}
    found = {}
    for name, value in values.items():
        found[name] = value
        if resamples:
            found[f"{name}_low"], found[f"{name}_high"] = interval(name, predicted, true, resamples, seed, confidence, threshold) if len(np.atleast_1d(true)) >= 2 else (np.nan, np.nan)
    found["majority_accuracy"] = majority_accuracy(true, threshold)
    found["out_of_range"] = out_of_range(predicted, *score_range)
    return found
