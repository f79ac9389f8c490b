"""Case- and breast-level ROC of CAD scores: empirical curve and Wilcoxon (Mann-Whitney) AUC.

A unit (exam or breast) is scored by its highest finding score, -inf when it has no finding,
so that mark-free units tie at the bottom of the scale. The AUC is the probability that a
random positive unit outscores a random negative one, ties counting one half.
"""

from __future__ import annotations

import numpy as np

from verification.froc import psi


def auc(negative: np.ndarray, positive: np.ndarray) -> float:
    """Empirical ROC AUC (Wilcoxon statistic / (n_neg * n_pos)); nan when a class is empty."""
    if len(negative) == 0 or len(positive) == 0:
        return float("nan")
    return float(psi(negative, positive).mean())


def roc_curve(negative: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct finite score, from (0, 0) to (1, 1); its area is :func:`auc`."""
    neg = np.asarray(negative, dtype=np.float64)
    pos = np.asarray(positive, dtype=np.float64)
    scores = np.concatenate([neg, pos])
    thresholds = np.unique(scores[np.isfinite(scores)])[::-1]
    fpr = (neg[None, :] >= thresholds[:, None]).mean(axis=1) if neg.size else np.zeros(thresholds.size)
    tpr = (pos[None, :] >= thresholds[:, None]).mean(axis=1) if pos.size else np.zeros(thresholds.size)
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], tpr, [1.0]])
