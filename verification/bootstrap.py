"""Case-level (cluster) bootstrap, vectorised over resamples (Efron & Tibshirani 1993).

The case (exam) is the resampling unit, so lesions, views, breasts and marks of one exam stay
together and within-exam correlation is carried into the intervals. A resample is a row of
``n_cases`` exam indices drawn with replacement; it is held as a row of per-exam *counts*
(how often each exam was drawn), so that every statistic that sums over exams becomes a matrix
product ``counts @ per_exam_values`` and all resamples are computed at once. Intervals are
percentile intervals; a resample in which a statistic is undefined (e.g. no normal exam drawn)
is nan and left out of that statistic's interval.
"""

from __future__ import annotations

import warnings

import numpy as np

from verification.froc import psi

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 20260505
_CHUNK = 256  # resamples per block in the FROC step: bounds memory at _CHUNK x thresholds


def resample_indices(n_cases: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_cases) exam indices drawn with replacement; same seed, same matrix."""
    return np.random.default_rng(seed).integers(0, n_cases, size=(n_resamples, n_cases))


def case_weights(indices: np.ndarray, n_cases: int) -> np.ndarray:
    """How often each exam occurs in each resample: (n_resamples, n_cases) float counts."""
    n_resamples = indices.shape[0]
    flat = (indices + n_cases * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n_cases).reshape(n_resamples, n_cases).astype(np.float64)


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0, ignoring undefined (nan) resamples."""
    tail = 50.0 * (1.0 - level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns give nan, on purpose
        low, high = np.nanpercentile(replicates, [tail, 100.0 - tail], axis=0)
    return low, high


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def pairwise_fom(
    weights: np.ndarray,
    neg_case: np.ndarray,
    neg_scores: np.ndarray,
    pos_case: np.ndarray,
    pos_scores: np.ndarray,
    pos_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted Wilcoxon FOM of every resample: ROC AUC, AFROC or (with ``pos_weights``) wAFROC.

    Negatives are normal units (their case index and score), positives lesions or abnormal
    units. FOM_b = sum_ij w_bi v_bj psi_ij / (sum_i w_bi * sum_j v_bj), with w, v the exam counts
    (times ``pos_weights`` for positives); with all counts 1 it is the plain statistic.
    """
    kernel = psi(neg_scores, pos_scores)
    w_neg = weights[:, neg_case]
    w_pos = weights[:, pos_case] * (1.0 if pos_weights is None else pos_weights[None, :])
    return _divide(((w_neg @ kernel) * w_pos).sum(axis=1), w_neg.sum(axis=1) * w_pos.sum(axis=1))


def weighted_proportion(weights: np.ndarray, unit_case: np.ndarray, hits: np.ndarray,
                        strata: np.ndarray) -> np.ndarray:
    """Share of units hit within each stratum, per resample: (n_resamples, n_strata).

    ``hits`` is (units,) or (n_resamples, units) booleans; ``strata`` (units, n_strata) booleans.
    """
    w = weights[:, unit_case]
    strata = strata.astype(np.float64)
    return _divide((w * hits) @ strata, w @ strata)


def cumulative_counts(unit_case: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, n_cases: int) -> np.ndarray:
    """(n_cases, K): per exam, how many units score at or above each of the descending ``thresholds``."""
    k = thresholds.size
    ascending = thresholds[::-1]
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    start = k - np.searchsorted(ascending, scores, side="right")  # first threshold index counting it
    counts = np.zeros((n_cases, k + 1))
    np.add.at(counts, (unit_case, start), 1.0)
    return np.cumsum(counts, axis=1)[:, :k]


def froc_points(
    weights: np.ndarray,
    case_tp: np.ndarray,
    case_fp: np.ndarray,
    case_lesions: np.ndarray,
    case_images: np.ndarray,
    fpi: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity at each false-marks-per-image value, per resample, and the threshold index used.

    ``case_tp``/``case_fp`` are :func:`cumulative_counts` at thresholds descending; sensitivity at
    F is that of the lowest threshold whose FPI does not exceed F (the highest sensitivity, the
    curve being monotone). Index -1: no threshold qualifies (sensitivity 0).
    Returns (sensitivity, index), each (n_resamples, len(fpi)).
    """
    n_resamples = weights.shape[0]
    sens = np.empty((n_resamples, len(fpi)))
    index = np.empty((n_resamples, len(fpi)), dtype=np.int64)
    for start in range(0, n_resamples, _CHUNK):
        w = weights[start:start + _CHUNK]
        rows = np.arange(w.shape[0])
        lesions = (w @ case_lesions)[:, None]
        sensitivity = _divide(w @ case_tp, np.broadcast_to(lesions, (w.shape[0], case_tp.shape[1])))
        rate = (w @ case_fp) / np.maximum(w @ case_images, 1.0)[:, None]
        for j, f in enumerate(fpi):
            k = (rate <= f + 1e-12).sum(axis=1) - 1  # rate rises with k: count = last index + 1
            index[start:start + _CHUNK, j] = k
            value = sensitivity[rows, np.maximum(k, 0)] if sensitivity.shape[1] else np.zeros(len(rows))
            sens[start:start + _CHUNK, j] = np.where(k >= 0, value, np.where(lesions[:, 0] > 0, 0.0, np.nan))
    return sens, index
