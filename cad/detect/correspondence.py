"""Learned CC/MLO correspondence: the probability that a CC candidate and an MLO candidate of one
breast are the same lesion, from where each lies (relative to the nipple, the chest wall or
pectoral line and the breast's own size) and how it looks (size, contrast, texture, detector
score); linking is then an assignment over these probabilities (scipy's Hungarian solver) with
one pre-specified minimum probability.

The model is a small perceptron (or a logistic regression) over :data:`FEATURES`, fitted on
phantom candidate pairs (cad_tools.training.correspondence_fit) and locked in the manifest
(``correspondence``: the feature names, their centring and scaling, the layers' weights, the
minimum probability, the dual-view rule), so the settings hash covers it: about a thousand
numbers, run here in numpy, at a site as in training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from cad.detect.inputs import ViewInput
from cad.detect.linking import Candidate, candidates
from cad.detect.postprocess import ViewDetections
from cad.io.image import View

#: the pair features, in the order of the locked weights
FEATURES = (
    "nipple_diff_mm",  # |CC - MLO| distance from the nipple
    "nipple_rel_diff",  # the same, each as a fraction of its view's posterior nipple line
    "depth_diff_mm",  # |CC - MLO| depth behind the nipple (0 when unknown)
    "depth_known",
    "depth_rel_diff",  # the same, each as a fraction of its view's posterior nipple line
    "log_size_ratio",  # |log(CC size / MLO size)|
    "contrast_diff",  # |CC - MLO| local contrast
    "texture_diff",  # |CC - MLO| log of the inside-to-ring standard deviation ratio
    "logit_min",  # the weaker of the two detector scores (logit)
    "logit_max",  # the stronger
    "logit_diff",  # |CC - MLO| detector score (logit)
)


@dataclass(frozen=True)
class ViewCandidate:
    """A detection of one view with what correspondence compares."""

    base: Candidate
    #: its index among its view's detections
    detection: int
    box: np.ndarray  # original image pixels
    #: posterior nipple line length (mm): nipple to chest wall (CC) or to the pectoral line (MLO)
    pnl_mm: float | None
    #: log of the standard deviation inside the box over that of the ring around it
    texture: float

    @property
    def score(self) -> float:
        return self.base.score


def _texture(view: ViewInput, box: np.ndarray) -> float:
    a = view.array
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    w, h = max(1, x1 - x0), max(1, y1 - y0)
    inner = a[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
    outer = a[max(0, y0 - h // 2):max(0, y1 + h // 2), max(0, x0 - w // 2):max(0, x1 + w // 2)]
    if inner.size < 4 or outer.size <= inner.size:
        return 0.0
    ring = np.concatenate([outer[: h // 2].ravel(), outer[-(h // 2):].ravel()]) if h >= 2 else outer.ravel()
    return float(math.log((float(inner.std()) + 1e-3) / (float(ring.std()) + 1e-3)))


def _pnl_mm(view: ViewInput, image_view: View) -> float | None:
    geometry = view.geometry
    nipple = np.asarray(geometry.nipple, dtype=np.float64)
    if image_view is View.MLO:
        distance = geometry.pectoral_distance_px(*nipple)
        return None if distance is None else distance * geometry.spacing_mm
    target_mm = geometry.spacing_mm / geometry.transform.scale[0]
    return float(geometry.transform.forward_points(nipple)[0, 0]) * target_mm  # canonical: chest wall at x = 0


def view_candidates(view: ViewInput, image_view: View, detections: ViewDetections, min_score: float,
                    per_view: int, first_index: int = 0) -> list[ViewCandidate]:
    """The strongest ``per_view`` detections scoring at least ``min_score`` (detections come
    highest first), with their correspondence features."""
    keep = [k for k in range(len(detections)) if detections.scores[k] >= min_score][:per_view]
    boxes, model_boxes, scores = detections.boxes[keep], detections.model_boxes[keep], detections.scores[keep]
    pnl = _pnl_mm(view, image_view)
    return [ViewCandidate(base, keep[k], boxes[k], pnl, _texture(view, model_boxes[k]))
            for k, base in enumerate(candidates(view, image_view, boxes, model_boxes, scores, first_index))]


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _relative(value: float | None, pnl: float | None) -> float | None:
    return value / pnl if value is not None and pnl else None


def pair_features(cc: ViewCandidate, mlo: ViewCandidate) -> list[float]:
    """The values of :data:`FEATURES` for one CC/MLO pair."""
    a, b = cc.base, mlo.base
    nip_a, nip_b = _relative(a.nipple_mm, cc.pnl_mm), _relative(b.nipple_mm, mlo.pnl_mm)
    known = a.depth_mm is not None and b.depth_mm is not None
    dep_a, dep_b = _relative(a.depth_mm, cc.pnl_mm), _relative(b.depth_mm, mlo.pnl_mm)
    la, lb = _logit(a.score), _logit(b.score)
    return [
        abs(a.nipple_mm - b.nipple_mm),
        abs(nip_a - nip_b) if nip_a is not None and nip_b is not None else 0.0,
        abs(a.depth_mm - b.depth_mm) if known else 0.0,  # type: ignore[operator]
        float(known),
        abs(dep_a - dep_b) if dep_a is not None and dep_b is not None else 0.0,
        abs(math.log(a.size_mm / b.size_mm)),
        abs(a.contrast - b.contrast),
        abs(cc.texture - mlo.texture),
        min(la, lb),
        max(la, lb),
        abs(la - lb),
    ]


Layer = tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]


@dataclass(frozen=True)
class CorrespondenceModel:
    """The locked model of "same lesion" over :data:`FEATURES`: standardised features through
    ``layers`` (each a weight matrix, inputs x outputs, and a bias; ReLU between layers, one
    logit out: one layer is a logistic regression, more a small perceptron)."""

    layers: tuple[Layer, ...]
    centre: tuple[float, ...]
    scale: tuple[float, ...]
    #: a pair less likely than this is never linked (pre-specified on selection data)
    min_probability: float
    #: candidates scoring below this take no part in linking
    min_score: float = 0.1
    per_view: int = 20
    #: the dual-view score of a detection whose breast has both views analysed:
    #: sigmoid(b0 + b1 * logit(own score) + b2 * logit(best counterpart probability)), fitted on
    #: selection candidates (None: each detection keeps its own score, and a linked finding's is
    #: the noisy-OR of its two weighted by the link probability)
    dual_view: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        n = len(FEATURES)
        if not (len(self.centre) == len(self.scale) == n) or not self.layers:
            raise ValueError(f"correspondence: centres and scales for {n} features ({', '.join(FEATURES)}) and a layer")
        width = n
        for k, (weights, bias) in enumerate(self.layers):
            if len(weights) != width or any(len(row) != len(bias) for row in weights):
                raise ValueError(f"correspondence: layer {k} does not take {width} inputs to {len(bias)} outputs")
            width = len(bias)
        if width != 1:
            raise ValueError("correspondence: the last layer gives one logit")
        if not 0.0 < self.min_probability < 1.0 or any(s <= 0 for s in self.scale):
            raise ValueError("correspondence: min_probability must be in (0, 1) and every scale positive")
        if self.dual_view is not None and len(self.dual_view) != 3:
            raise ValueError("correspondence.dual_view: three coefficients (bias, own score, counterpart)")

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, dtype=np.float64) - np.asarray(self.centre)) / np.asarray(self.scale)
        for k, (weights, bias) in enumerate(self.layers):
            z = z @ np.asarray(weights) + np.asarray(bias)
            if k < len(self.layers) - 1:
                z = np.maximum(z, 0.0)
        p: np.ndarray = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return p

    def dual_score(self, score: float, counterpart: float) -> float:
        """A detection's score with the other view's evidence: its own score and the probability
        of its best counterpart there (0 when there is none)."""
        if self.dual_view is None:
            return score
        b0, b1, b2 = self.dual_view
        z = b0 + b1 * _logit(score) + b2 * _logit(counterpart)
        return 1.0 / (1.0 + math.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "layers": [{"weights": [list(r) for r in w], "bias": list(b)}
                                                        for w, b in self.layers],
                "centre": list(self.centre), "scale": list(self.scale), "min_probability": self.min_probability,
                "min_score": self.min_score, "per_view": self.per_view,
                **({"dual_view": list(self.dual_view)} if self.dual_view is not None else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorrespondenceModel:
        """The manifest's ``correspondence``; unknown keys or other features are refused."""
        known = {"features", "layers", "centre", "scale", "min_probability", "min_score", "per_view", "dual_view"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown correspondence settings: {', '.join(unknown)}")
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"correspondence: features {data.get('features')} are not this software's "
                             f"({', '.join(FEATURES)})")
        layers = tuple((tuple(tuple(float(v) for v in row) for row in layer["weights"]),
                        tuple(float(v) for v in layer["bias"])) for layer in data["layers"])
        return cls(layers, tuple(float(c) for c in data["centre"]), tuple(float(s) for s in data["scale"]),
                   float(data["min_probability"]), float(data.get("min_score", 0.1)), int(data.get("per_view", 20)),
                   tuple(float(v) for v in data["dual_view"]) if "dual_view" in data else None)  # type: ignore[arg-type]


def pair_probabilities(cc: Sequence[ViewCandidate], mlo: Sequence[ViewCandidate],
                       model: CorrespondenceModel) -> np.ndarray:
    """(len(cc), len(mlo)): the probability that each pair is one lesion."""
    if not cc or not mlo:
        return np.zeros((len(cc), len(mlo)))
    features = np.array([pair_features(c, m) for c in cc for m in mlo], dtype=np.float64)
    return model.probabilities(features).reshape(len(cc), len(mlo))


def assign(p: np.ndarray, model: CorrespondenceModel) -> list[tuple[int, int]]:
    """The links of one breast, as (row, column) of the pair probabilities ``p``: the one-to-one
    assignment maximising the summed log-odds above the minimum probability (a pair below it is
    never linked; leaving a candidate unlinked gains nothing and costs nothing)."""
    n, m = p.shape
    if not n or not m:
        return []
    floor = _logit(model.min_probability)
    gain = np.log(np.clip(p, 1e-9, 1 - 1e-9) / np.clip(1 - p, 1e-9, 1.0)) - floor
    allowed = p >= model.min_probability
    cost = np.zeros((n + m, m + n))
    cost[:n, :m] = np.where(allowed, -gain, 1e6)
    cost[:n, m:] = np.where(np.eye(n, dtype=bool), 0.0, 1e6)
    cost[n:, :m] = np.where(np.eye(m, dtype=bool), 0.0, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols) if r < n and c < m and allowed[r, c])
