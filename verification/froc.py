"""Lesion-level FROC scoring of CAD marks against truth boxes.

Scoring rules (stated, and the defaults of `cad evaluate`):

* a mark localises a lesion when the mark's box centre lies inside the lesion's truth box
  (or, optionally, when their IoU reaches a threshold);
* each lesion is counted once per view: its rating is the highest-scoring mark that localises
  it; further marks on the same lesion are neither true nor false positives;
* a mark that localises no lesion is a false positive, including every mark on a lesion-free
  image; a mark that only localises an *excluded* lesion (a type or size outside the analysis)
  is ignored, neither true nor false;
* sensitivity at a false-positive rate F is the highest sensitivity reached by any threshold
  whose false marks per image do not exceed F.

Case-level figures of merit (Chakraborty & Berbaum 2004; Chakraborty, *Observer Performance
Methods for Diagnostic Imaging*, 2017), computed from the same ratings: unmarked lesions and
normal cases without a false mark are rated -inf (below every mark), and

* AFROC FOM = mean over (normal case, lesion) pairs of psi(FP_i, LL_j), FP_i the highest-rated
  false mark on normal case i, LL_j the rating of lesion j, psi = 1 if LL > FP, 0.5 if tied,
  else 0: the area under the AFROC curve (lesion localisation fraction vs FP fraction);
* wAFROC FOM = the same with every abnormal case weighted equally and, by default, its lesions
  weighted equally within it (weights summing to 1 per case).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FPI_POINTS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class ScoredMark:
    """A CAD mark on one image: box in original pixels and its score."""

    image_id: str
    box: Sequence[float]
    score: float


@dataclass(frozen=True)
class TruthLesion:
    """One lesion as seen in one image; ``included`` False for excluded types/sizes."""

    lesion_id: str
    image_id: str
    box: Sequence[float]
    included: bool = True


@dataclass(frozen=True)
class FrocResult:
    """Per-lesion ratings (nan when never marked) and false-positive mark scores.

    ``fp_marks`` and ``rating_mark`` index the scored marks: the false marks, and the mark that
    rated each lesion (-1 when never marked). The evaluation needs them to group marks by case
    and to tell which finding localised a lesion.
    """

    lesion_ids: tuple[tuple[str, str], ...]
    lesion_scores: np.ndarray
    fp_scores: np.ndarray
    n_images: int
    fp_marks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rating_mark: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_lesions(self) -> int:
        return len(self.lesion_ids)

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(thresholds descending, FPI, sensitivity) at every distinct mark score."""
        scores = np.concatenate([self.lesion_scores[~np.isnan(self.lesion_scores)], self.fp_scores])
        thresholds = np.unique(scores)[::-1]
        lesion = np.sort(np.nan_to_num(self.lesion_scores, nan=-np.inf))
        fp = np.sort(self.fp_scores)
        tp_count = len(lesion) - np.searchsorted(lesion, thresholds, side="left")
        fp_count = len(fp) - np.searchsorted(fp, thresholds, side="left")
        sens = tp_count / max(self.n_lesions, 1)
        fpi = fp_count / max(self.n_images, 1)
        return thresholds, fpi, sens

    def sensitivity_at(self, fpi: float) -> float:
        """Highest sensitivity with at most ``fpi`` false marks per image."""
        _, rate, sens = self.curve()
        ok = rate <= fpi + 1e-12
        return float(sens[ok].max()) if ok.any() else 0.0

    def fpi_at_threshold(self, threshold: float) -> float:
        """False marks per image scoring at or above ``threshold``."""
        return float((self.fp_scores >= threshold).sum() / max(self.n_images, 1))

    def sensitivity_at_threshold(self, threshold: float) -> float:
        """Share of lesions rated at or above ``threshold`` (unmarked lesions never are)."""
        scores = np.nan_to_num(self.lesion_scores, nan=-np.inf)
        return float((scores >= threshold).sum() / max(self.n_lesions, 1))

    def threshold_at(self, fpi: float) -> float:
        """Lowest score threshold with at most ``fpi`` false marks per image."""
        thresholds, rate, _ = self.curve()
        ok = np.flatnonzero(rate <= fpi + 1e-12)
        return float(thresholds[ok[-1]]) if ok.size else float("inf")


def _centre_inside(mark: Sequence[float], box: Sequence[float]) -> bool:
    cx, cy = (mark[0] + mark[2]) / 2, (mark[1] + mark[3]) / 2
    return box[0] <= cx < box[2] and box[1] <= cy < box[3]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def localises(mark: Sequence[float], box: Sequence[float], iou_threshold: float | None = None) -> bool:
    """The localisation criterion: centre inside the box, or IoU >= ``iou_threshold``."""
    if iou_threshold is None:
        return _centre_inside(mark, box)
    return _iou(mark, box) >= iou_threshold


def score_marks(
    marks: Sequence[ScoredMark],
    lesions: Sequence[TruthLesion],
    image_ids: Sequence[str],
    iou_threshold: float | None = None,
) -> FrocResult:
    """Apply the scoring rules to every mark; ``image_ids`` lists every image analysed."""
    by_image: dict[str, list[int]] = {}
    for k, lesion in enumerate(lesions):
        by_image.setdefault(lesion.image_id, []).append(k)
    best = np.full(len(lesions), np.nan)
    best_mark = np.full(len(lesions), -1, dtype=np.int64)
    fps: list[float] = []
    fp_marks: list[int] = []
    for m, mark in enumerate(marks):
        hits = [k for k in by_image.get(mark.image_id, []) if localises(mark.box, lesions[k].box, iou_threshold)]
        included = [k for k in hits if lesions[k].included]
        if included:
            for k in included:
                if np.isnan(best[k]) or mark.score > best[k]:
                    best[k] = mark.score
                    best_mark[k] = m
        elif not hits:
            fps.append(float(mark.score))
            fp_marks.append(m)
    keep = [k for k, lesion in enumerate(lesions) if lesion.included]
    return FrocResult(
        tuple((lesions[k].lesion_id, lesions[k].image_id) for k in keep),
        best[keep],
        np.asarray(fps, dtype=np.float64),
        len(set(image_ids)),
        np.asarray(fp_marks, dtype=np.int64),
        best_mark[keep],
    )


def psi(fp: np.ndarray, ll: np.ndarray) -> np.ndarray:
    """Wilcoxon kernel for every (fp, ll) pair: 1 if ll > fp, 0.5 if tied, else 0 (shape fp x ll)."""
    fp = np.asarray(fp, dtype=np.float64)[:, None]
    ll = np.asarray(ll, dtype=np.float64)[None, :]
    return (ll > fp) + 0.5 * (ll == fp)


def afroc_fom(normal_fp: np.ndarray, lesion_ll: np.ndarray, lesion_weights: np.ndarray | None = None) -> float:
    """AFROC FOM, or the wAFROC FOM when ``lesion_weights`` (summing to 1 per abnormal case) are given.

    ``normal_fp``: highest false-mark rating per normal case (-inf if none); ``lesion_ll``: rating
    of each lesion (-inf if unmarked). nan when there are no normal cases or no lesions.
    """
    ll = np.asarray(lesion_ll, dtype=np.float64)
    w = np.ones_like(ll) if lesion_weights is None else np.asarray(lesion_weights, dtype=np.float64)
    if len(normal_fp) == 0 or w.sum() == 0:
        return float("nan")
    return float((psi(normal_fp, ll) @ w).sum() / (len(normal_fp) * w.sum()))


def afroc_curve(
    normal_fp: np.ndarray, lesion_ll: np.ndarray, lesion_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(FPF, LLF) of the (w)AFROC curve from (0, 0) to (1, 1); its area is :func:`afroc_fom`.

    The last segment joins the lowest-threshold point to (1, 1), as in Chakraborty's definition
    (unmarked lesions and mark-free normal cases are tied at the bottom of the scale).
    """
    fp = np.asarray(normal_fp, dtype=np.float64)
    ll = np.asarray(lesion_ll, dtype=np.float64)
    w = np.ones_like(ll) if lesion_weights is None else np.asarray(lesion_weights, dtype=np.float64)
    finite = np.concatenate([fp[np.isfinite(fp)], ll[np.isfinite(ll)]])
    thresholds = np.unique(finite)[::-1]
    fpf = (fp[None, :] >= thresholds[:, None]).mean(axis=1) if fp.size else np.zeros(thresholds.size)
    llf = ((ll[None, :] >= thresholds[:, None]) @ w) / w.sum() if w.sum() else np.zeros(thresholds.size)
    return np.concatenate([[0.0], fpf, [1.0]]), np.concatenate([[0.0], llf, [1.0]])
