"""CC/MLO lesion linking: the same mass seen in both views of a breast becomes one finding.

Each detection is described by where it lies relative to the breast's landmarks and by how it
looks: distance from the nipple (mm), depth behind the nipple along the posterior nipple line
(CC: horizontal distance from the nipple toward the chest wall; MLO: how much closer to the
pectoral line than the nipple it lies), apparent size (mm), local contrast and detector score
(logit). A pair's cost is the sum of squared, scaled differences; pairs beyond the gate are never
linked; scipy's Hungarian solver picks the cheapest one-to-one assignment in which leaving a
detection unlinked is an option. A linked pair's score is fused by a noisy-OR weighted by the
link's confidence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from cad.detect.inputs import ViewInput
from cad.io.image import View


@dataclass(frozen=True)
class LinkingConfig:
    """Tolerances (one standard deviation of the expected CC-MLO difference) and the gate."""

    nipple_sd_mm: float = 12.0
    #: wide: depth is a weak cue on phantoms (15 mm linked fewer true pairs on the linking-tuning
    #: phantoms; docs/detection.md)
    depth_sd_mm: float = 40.0
    log_size_sd: float = 0.35
    contrast_sd: float = 0.6
    #: largest cost (sum of squared scaled differences) a linked pair may have
    gate: float = 9.0
    #: how much the two views' detector scores (logit) of one mass differ: a mass the detector
    #: is sure of in one view is rarely a faint candidate in the other (0 disables the term;
    #: 1.5 in algorithm 0.2.0, 3.0 from 0.3.0: docs/detection.md)
    score_sd_logit: float = 3.0
    #: a detection scoring below this is never linked (weak marks stay single-view; 0.05 in
    #: algorithm 0.2.0, where most linked findings at 1 FPI joined two false marks)
    min_score: float = 0.15

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinkingConfig:
        """The settings of a manifest; an unknown key is an error, never a silent default (a
        misspelt setting would otherwise look recorded while its default runs)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown linking settings: {', '.join(unknown)}")
        return cls(**{k: float(v) for k, v in data.items()})


@dataclass(frozen=True)
class Candidate:
    """One detection with the features linking compares."""

    index: int
    score: float
    nipple_mm: float
    depth_mm: float | None
    size_mm: float
    contrast: float


@dataclass(frozen=True)
class Link:
    cc: int
    mlo: int
    cost: float

    @property
    def confidence(self) -> float:
        return math.exp(-0.5 * self.cost / 4.0)


def _contrast(view: ViewInput, box: np.ndarray) -> float:
    """Mean normalised intensity inside the box minus the ring around it (model pixels)."""
    a = view.array
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    w, h = max(1, x1 - x0), max(1, y1 - y0)
    inner = a[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
    ox0, oy0 = max(0, x0 - w // 2), max(0, y0 - h // 2)
    outer = a[oy0:max(0, y1 + h // 2), ox0:max(0, x1 + w // 2)]
    if inner.size == 0 or outer.size <= inner.size:
        return 0.0
    ring_sum = float(outer.sum()) - float(inner.sum())
    ring_mean = ring_sum / (outer.size - inner.size)
    return float(inner.mean()) - ring_mean


def candidates(view: ViewInput, image_view: View, boxes: np.ndarray, model_boxes: np.ndarray,
               scores: np.ndarray, first_index: int = 0) -> list[Candidate]:
    """Linking features of each detection on one view, indexed from ``first_index``."""
    geometry = view.geometry
    spacing = geometry.spacing_mm
    target_mm = spacing / geometry.transform.scale[0]
    out = []
    nipple = np.asarray(geometry.nipple, dtype=np.float64)
    nipple_model_x = float(geometry.transform.forward_points(nipple)[0, 0])
    for k, (box, mbox, score) in enumerate(zip(boxes, model_boxes, scores)):
        centre = (box[:2] + box[2:]) / 2
        if image_view is View.MLO:
            to_nipple, to_centre = (geometry.pectoral_distance_px(*nipple), geometry.pectoral_distance_px(*centre))
            depth = ((to_nipple - to_centre) * spacing
                     if to_nipple is not None and to_centre is not None else None)
        else:
            # canonical CC: chest wall at x = 0, nipple toward +x
            depth = float((nipple_model_x - (mbox[0] + mbox[2]) / 2) * target_mm)
        size = float(math.sqrt(max(1e-6, (box[2] - box[0]) * (box[3] - box[1]))) * spacing)
        out.append(Candidate(first_index + k, float(score), geometry.nipple_distance_mm(*centre), depth, size,
                             _contrast(view, mbox)))
    return out


def pair_cost(cc: Candidate, mlo: Candidate, config: LinkingConfig) -> float:
    cost = ((cc.nipple_mm - mlo.nipple_mm) / config.nipple_sd_mm) ** 2
    if cc.depth_mm is not None and mlo.depth_mm is not None:
        cost += ((cc.depth_mm - mlo.depth_mm) / config.depth_sd_mm) ** 2
    cost += (math.log(cc.size_mm / mlo.size_mm) / config.log_size_sd) ** 2
    cost += ((cc.contrast - mlo.contrast) / config.contrast_sd) ** 2
    if config.score_sd_logit > 0:
        cost += ((_logit(cc.score) - _logit(mlo.score)) / config.score_sd_logit) ** 2
    return cost


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def link(cc: list[Candidate], mlo: list[Candidate], config: LinkingConfig) -> list[Link]:
    """Minimum-cost CC/MLO assignment among gated, sufficiently scored pairs, where leaving a
    detection unlinked is an option costing half the gate.

    Without that option the solver must pair as many detections as it can, and it will trade a
    cheap true pair for two mediocre ones; with it, a pair is linked only when that lowers the
    total cost, so any linked pair costs less than the gate.
    """
    cc = [c for c in cc if c.score >= config.min_score]
    mlo = [m for m in mlo if m.score >= config.min_score]
    if not cc or not mlo:
        return []
    n, m = len(cc), len(mlo)
    costs = np.array([[pair_cost(c, m_, config) for m_ in mlo] for c in cc])
    blocked = costs > config.gate
    never = config.gate * 1e3
    unlinked = np.full((n + m, m + n), never)
    unlinked[:n, :m] = np.where(blocked, never, costs)
    unlinked[np.arange(n), m + np.arange(n)] = config.gate / 2  # CC detection left single-view
    unlinked[n + np.arange(m), np.arange(m)] = config.gate / 2  # MLO detection left single-view
    unlinked[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(unlinked)
    return sorted(
        (Link(cc[r].index, mlo[c].index, float(costs[r, c]))
         for r, c in zip(rows, cols) if r < n and c < m and not blocked[r, c]),
        key=lambda l: (l.cc, l.mlo),
    )


def fuse(score_a: float, score_b: float, confidence: float) -> float:
    """Noisy-OR of two view scores, weighted by link confidence (0: the larger score alone)."""
    high, low = max(score_a, score_b), min(score_a, score_b)
    return high + confidence * low * (1.0 - high)
