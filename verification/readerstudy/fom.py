"""Figures of merit (Wilcoxon AUC, wAFROC), their case-deletion jackknife, and empirical curves.

Both figures of merit are weighted two-sample U statistics over (non-diseased case, lesion)
pairs, following RJafroc::

    theta = 1 / (K1 K2) * sum_a sum_b sum_l  w_bl * psi(x_a, y_bl),
    psi(x, y) = 1 if y > x, 1/2 if y == x, 0 otherwise,

Wilcoxon: ``x_a`` the rating of non-diseased case ``a``, ``y_b`` that of diseased case ``b``
(one "lesion", weight 1). wAFROC: ``x_a`` the highest false-positive rating on non-diseased
case ``a`` and ``y_bl`` the rating of lesion ``l`` of case ``b`` with its weight ``w_bl``
(weights of a case sum to 1); unmarked cases and lesions are rated ``-inf`` (so two unmarked
compare as a tie). Because theta is a sum over pairs, deleting one case removes one row or
one column of that sum, which makes the jackknife exact and cheap.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from verification.readerstudy.data import Paradigm, ReaderStudy, ReaderStudyInputError


class FigureOfMerit(StrEnum):
    WILCOXON = "wilcoxon"
    WAFROC = "wafroc"

    @property
    def label(self) -> str:
        return {"wilcoxon": "Wilcoxon AUC", "wafroc": "wAFROC AUC"}[self.value]

    @property
    def paradigm(self) -> Paradigm:
        """The data the figure of merit is defined on (RJafroc allows only these pairings)."""
        return Paradigm.ROC if self is FigureOfMerit.WILCOXON else Paradigm.FROC


def check_fom(study: ReaderStudy, fom: FigureOfMerit) -> None:
    """Refuse a figure of merit that does not fit the data (as RJafroc does)."""
    if study.paradigm is not fom.paradigm:
        other = "wafroc" if fom is FigureOfMerit.WILCOXON else "wilcoxon"
        raise ReaderStudyInputError(
            f"{study.source}: holds {study.paradigm.value} data; --fom {fom.value} needs "
            f"{fom.paradigm.value} data (use --fom {other})")
    if study.n_normal < 2 or study.n_abnormal < 2:
        raise ReaderStudyInputError(
            f"{study.source}: the jackknife needs at least 2 non-diseased and 2 diseased cases "
            f"(found {study.n_normal} and {study.n_abnormal})")


def _pairs(study: ReaderStudy, fom: FigureOfMerit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per treatment and reader: noise ratings ``(I, J, K1)``, signal ratings ``(I, J, K2, L)``
    and signal weights ``(K2, L)``."""
    k1 = study.n_normal
    if fom is FigureOfMerit.WILCOXON:
        return study.nl[:, :, :k1, 0], study.ll[..., :1], np.ones((study.n_abnormal, 1))
    return study.nl[:, :, :k1, :].max(axis=3), study.ll, study.lesion_weights


def _placements(noise: np.ndarray, signal: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column sums of ``w_bl * psi(x_a, y_bl)`` for one reader and treatment.

    Returns ``(per_noise (K1,), per_signal (K2,))``, computed by sorting (O(n log n)) rather
    than forming the K1 x K2 comparison matrix.
    """
    values, w = signal.ravel(), weights.ravel()
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    cum_w = np.concatenate([[0.0], np.cumsum(w[order])])
    lo = np.searchsorted(sorted_values, noise, side="left")
    hi = np.searchsorted(sorted_values, noise, side="right")
    per_noise = (cum_w[-1] - cum_w[hi]) + 0.5 * (cum_w[hi] - cum_w[lo])
    sorted_noise = np.sort(noise)
    below = np.searchsorted(sorted_noise, signal, side="left")
    ties = np.searchsorted(sorted_noise, signal, side="right") - below
    per_signal = (weights * (below + 0.5 * ties)).sum(axis=1)
    return per_noise, per_signal


def placements(study: ReaderStudy, fom: FigureOfMerit) -> tuple[np.ndarray, np.ndarray]:
    """``(I, J, K1)`` and ``(I, J, K2)`` row/column sums of the pair kernel (see :func:`_placements`)."""
    noise, signal, weights = _pairs(study, fom)
    shape = (study.n_treatments, study.n_readers)
    per_noise = np.empty((*shape, study.n_normal))
    per_signal = np.empty((*shape, study.n_abnormal))
    for i in range(shape[0]):
        for j in range(shape[1]):
            per_noise[i, j], per_signal[i, j] = _placements(noise[i, j], signal[i, j], weights)
    return per_noise, per_signal


def figures_of_merit(study: ReaderStudy, fom: FigureOfMerit) -> np.ndarray:
    """``(I, J)`` figure of merit of every treatment and reader."""
    per_noise, _ = placements(study, fom)
    return per_noise.sum(axis=2) / (study.n_normal * study.n_abnormal)


def jackknife_foms(study: ReaderStudy, fom: FigureOfMerit) -> tuple[np.ndarray, np.ndarray]:
    """The figures of merit ``(I, J)`` and their leave-one-case-out values ``(I, J, K)``.

    Case index ``k`` runs over non-diseased cases first, then diseased ones (the study's order).
    """
    per_noise, per_signal = placements(study, fom)
    k1, k2 = study.n_normal, study.n_abnormal
    total = per_noise.sum(axis=2, keepdims=True)
    without_normal = (total - per_noise) / ((k1 - 1) * k2)
    without_abnormal = (total - per_signal) / (k1 * (k2 - 1))
    return total[..., 0] / (k1 * k2), np.concatenate([without_normal, without_abnormal], axis=2)


def empirical_curve(study: ReaderStudy, fom: FigureOfMerit, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Empirical operating points ``(x, y)`` from (0, 0) to (1, 1) for treatment ``i``, reader ``j``.

    ROC: (FPF, TPF). wAFROC: (FPF of the highest non-diseased mark, weighted lesion fraction).
    Straight segments join the points; the area under them equals the figure of merit (ties
    and unmarked cases give the diagonal segments that the 1/2 of the kernel accounts for).
    """
    noise, signal, weights = _pairs(study, fom)
    x_values, y_values = noise[i, j], signal[i, j]
    thresholds = np.unique(np.concatenate([x_values, y_values.ravel()]))
    thresholds = thresholds[np.isfinite(thresholds)][::-1]
    x = (x_values[None, :] >= thresholds[:, None]).mean(axis=1)
    y = ((y_values[None, ...] >= thresholds[:, None, None]) * weights).sum(axis=(1, 2)) / study.n_abnormal
    return np.concatenate([[0.0], x, [1.0]]), np.concatenate([[0.0], y, [1.0]])
