"""Second look at the detector's candidates with both views of the breast (false-positive reduction).

The first stage proposes candidates: up to 20 RetinaNet detections per view and the strongest
blobs (:mod:`cad.detect.blobs`) that no detection covers. The second stage rescores
each candidate from what a reader looks at when deciding whether a spot is a mass:

* the candidate itself: a patch scaled to its box (two box sides across) and a fixed 64 mm
  context patch, both 48 x 48 pixels of the normalised model input;
* where it lies and how it scored: first-stage score, size, distance from the nipple, depth
  behind it, local contrast, view;
* its best counterparts in the other view of the same breast: the ``COUNTERPARTS`` candidates
  there that best match its nipple distance, depth and size, each with its own patches and how
  well the pair agrees.

The network (:class:`cad_torch.rescore_network.DualViewRescorer`) returns two scores per
candidate: a *single-view* score from the candidate alone, and a *dual-view* score that also
weighs the counterparts. Everything here is plain numpy on the prepared views, computed the same
way in training and at a site.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from scipy import ndimage

from cad.detect import blobs
from cad.detect.blobs import BlobConfig
from cad.detect.inputs import ViewInput
from cad.detect.linking import Candidate, candidates
from cad.detect.postprocess import ViewDetections, nms
from cad.io.image import View

#: patch side (pixels) of both channels
PATCH = 48
#: context channel: a fixed square of this many model-input pixels (64 mm at 0.4 mm)
CONTEXT_PX = 160
#: the box channel spans this many box sides, within these limits (model-input pixels)
BOX_SPAN = 2.0
BOX_LIMITS = (24.0, 192.0)
#: counterparts per candidate taken from the other view
COUNTERPARTS = 4
OWN_FEATURES = ("score_logit", "blob_strength", "from_blob", "log_size", "nipple_mm", "depth_mm", "depth_missing",
                "contrast", "is_mlo")
PAIR_FEATURES = ("nipple_diff", "depth_diff", "depth_missing", "log_size_ratio", "contrast_diff", "score_logit")
#: scales of the geometric match that ranks counterparts (one SD of the CC-MLO difference)
NIPPLE_SD_MM = 12.0
DEPTH_SD_MM = 40.0
LOG_SIZE_SD = 0.35


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def patches(view: ViewInput, model_boxes: np.ndarray) -> np.ndarray:
    """(N, 2, PATCH, PATCH) float32: the box channel and the context channel of each candidate."""
    array = view.array
    fill = float(array.min())
    out = np.empty((len(model_boxes), 2, PATCH, PATCH), dtype=np.float32)
    smooth: dict[int, np.ndarray] = {}
    for k, box in enumerate(np.asarray(model_boxes, dtype=np.float64).reshape(-1, 4)):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = float(np.clip(BOX_SPAN * max(box[2] - box[0], box[3] - box[1]), *BOX_LIMITS))
        out[k, 0] = _crop(array, smooth, cx, cy, side, fill)
        out[k, 1] = _crop(array, smooth, cx, cy, float(CONTEXT_PX), fill)
    return out


def _crop(array: np.ndarray, smooth: dict[int, np.ndarray], cx: float, cy: float, side: float,
          fill: float) -> np.ndarray:
    """A ``PATCH`` x ``PATCH`` bilinear resampling of the square of ``side`` pixels centred on
    (cx, cy) in ``array`` (pixel-edge coordinates), ``fill`` outside it; shrinking is
    antialiased by a box filter of the step's size, computed once per view (``smooth``)."""
    size = int(round(side / PATCH))
    if size >= 2:
        if size not in smooth:
            smooth[size] = ndimage.uniform_filter(array, size=size, mode="nearest")
        source = smooth[size]
    else:
        source = array
    step = side / PATCH
    coords = (np.arange(PATCH) + 0.5) * step - side / 2 - 0.5
    grid = np.meshgrid(cy + coords, cx + coords, indexing="ij")
    patch: np.ndarray = ndimage.map_coordinates(source, grid, order=1, mode="constant", cval=fill).astype(np.float32)
    return patch


@dataclass(frozen=True)
class ViewCandidates:
    """The candidates of one view from both sources: the RetinaNet's detections, then the blobs
    that no detection already covers. ``detector_score`` is a detection's own score, or for a
    blob the best score of a detection whose box holds the blob's centre (0 if none);
    ``blob_strength`` is the blob detector's response at the candidate's centre."""

    model_boxes: np.ndarray  # (N, 4) model-input pixels
    boxes: np.ndarray  # (N, 4) original image pixels
    detector_score: np.ndarray  # (N,)
    blob_strength: np.ndarray  # (N,)
    from_blob: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.detector_score)


def view_candidates(view: ViewInput, detections: ViewDetections, config: BlobConfig) -> ViewCandidates:
    """Merge a view's detections with its blobs; a blob whose centre lies within half its radius
    of a detection's centre is the same candidate and is dropped."""
    stack = blobs.responses(view, config)
    found = blobs.find_blobs(view, config, stack)
    det_boxes = np.asarray(detections.model_boxes, dtype=np.float64).reshape(-1, 4)
    det_centres = (det_boxes[:, :2] + det_boxes[:, 2:]) / 2
    blob_centres = (found.model_boxes[:, :2] + found.model_boxes[:, 2:]) / 2
    keep, covering = [], []
    for k, (centre, sigma) in enumerate(zip(blob_centres, found.sigma)):
        if len(det_centres) and np.hypot(*(det_centres - centre).T).min() <= 0.5 * np.sqrt(2.0) * sigma:
            continue
        inside = ((det_boxes[:, 0] <= centre[0]) & (centre[0] < det_boxes[:, 2]) &
                  (det_boxes[:, 1] <= centre[1]) & (centre[1] < det_boxes[:, 3]))
        keep.append(k)
        covering.append(float(np.max(detections.scores[inside])) if inside.any() else 0.0)
    model_boxes = np.concatenate([det_boxes, found.model_boxes[keep].reshape(-1, 4)])
    centres = (model_boxes[:, :2] + model_boxes[:, 2:]) / 2
    return ViewCandidates(
        model_boxes=model_boxes,
        boxes=view.to_original(model_boxes),
        detector_score=np.concatenate([np.asarray(detections.scores, dtype=np.float64), covering]),
        blob_strength=blobs.strength_at(stack, centres),
        from_blob=np.concatenate([np.zeros(len(det_boxes), bool), np.ones(len(keep), bool)]),
    )


def own_features(candidates: list[Candidate], is_mlo: bool, found: ViewCandidates) -> np.ndarray:
    """(N, len(OWN_FEATURES)) float32 scaled to about unit range."""
    rows = [
        (
            _logit(c.score) / 4.0,
            float(strength),
            float(from_blob),
            math.log(max(c.size_mm, 1.0) / 15.0),
            c.nipple_mm / 100.0,
            (c.depth_mm or 0.0) / 100.0,
            float(c.depth_mm is None),
            c.contrast,
            float(is_mlo),
        )
        for c, strength, from_blob in zip(candidates, found.blob_strength, found.from_blob)
    ]
    return np.asarray(rows, dtype=np.float32).reshape(len(candidates), len(OWN_FEATURES))


def _pair(a: Candidate, b: Candidate) -> tuple[float, ...]:
    missing = a.depth_mm is None or b.depth_mm is None
    depth = 0.0 if missing else (a.depth_mm - b.depth_mm) / DEPTH_SD_MM  # type: ignore[operator]
    return (
        (a.nipple_mm - b.nipple_mm) / NIPPLE_SD_MM,
        depth,
        float(missing),
        math.log(max(a.size_mm, 1e-3) / max(b.size_mm, 1e-3)) / LOG_SIZE_SD,
        a.contrast - b.contrast,
        _logit(b.score) / 4.0,
    )


def geometric_cost(a: Candidate, b: Candidate) -> float:
    """How badly two candidates of the two views agree in nipple distance, depth and size."""
    nipple, depth, missing, size, _, _ = _pair(a, b)
    return nipple**2 + (0.0 if missing else depth**2) + size**2


@dataclass(frozen=True)
class Counterparts:
    """For each candidate, up to ``COUNTERPARTS`` candidates of the other view (indices into the
    breast's candidate list, best geometric match first), their pair features and a mask."""

    index: np.ndarray  # (M, K) int64, 0 where masked
    features: np.ndarray  # (M, K, len(PAIR_FEATURES)) float32
    mask: np.ndarray  # (M, K) float32, 1 where a counterpart exists


def counterparts(first: list[Candidate], second: list[Candidate], k: int = COUNTERPARTS) -> Counterparts:
    """Counterparts of the candidates of one breast, ``first`` (one view) then ``second`` (the
    other), indexed in that concatenated order."""
    everything = first + second
    m = len(everything)
    index = np.zeros((m, k), dtype=np.int64)
    features = np.zeros((m, k, len(PAIR_FEATURES)), dtype=np.float32)
    mask = np.zeros((m, k), dtype=np.float32)
    for offset, own, other, other_offset in ((0, first, second, len(first)), (len(first), second, first, 0)):
        for i, a in enumerate(own):
            ranked = sorted(range(len(other)), key=lambda j: (geometric_cost(a, other[j]), j))[:k]
            for slot, j in enumerate(ranked):
                index[offset + i, slot] = other_offset + j
                features[offset + i, slot] = _pair(a, other[j])
                mask[offset + i, slot] = 1.0
    return Counterparts(index, features, mask)


@dataclass(frozen=True)
class BreastInputs:
    """The second-stage inputs of one breast: every candidate of its CC views, then of its MLO
    views (rows), with the view each row comes from."""

    views: list[int]  # indices into the views given, CC first
    kinds: list[View]  # the kind (CC, MLO) of each entry of ``views``
    found: list[ViewCandidates]  # per entry of ``views``
    view_of: np.ndarray  # (M,) position in ``views`` of each row
    linking: list[Candidate]  # (M) linking features, ``score`` = first-stage score
    patches: np.ndarray  # (M, 2, PATCH, PATCH) float32
    own: np.ndarray  # (M, len(OWN_FEATURES)) float32
    pairs: Counterparts

    def __len__(self) -> int:
        return len(self.linking)


def breast_inputs(views: Sequence[tuple[ViewInput, View, ViewDetections]], config: BlobConfig) -> BreastInputs:
    """Candidates, patches, features and counterparts of one breast's analysed views."""
    order = [k for k, v in enumerate(views) if v[1] is View.CC] + [k for k, v in enumerate(views) if v[1] is View.MLO]
    groups: list[list[Candidate]] = [[], []]
    found_list, patch_list, own_list, view_of = [], [], [], []
    for position, k in enumerate(order):
        view_input, kind, detections = views[k]
        found = view_candidates(view_input, detections, config)
        found_list.append(found)
        linked = candidates(view_input, kind, found.boxes, found.model_boxes, found.detector_score)
        groups[kind is View.MLO] += linked
        patch_list.append(patches(view_input, found.model_boxes))
        own_list.append(own_features(linked, kind is View.MLO, found))
        view_of += [position] * len(found)
    return BreastInputs(
        views=order,
        kinds=[views[k][1] for k in order],
        found=found_list,
        view_of=np.asarray(view_of, dtype=np.int64),
        linking=groups[0] + groups[1],
        patches=np.concatenate(patch_list) if patch_list else np.zeros((0, 2, PATCH, PATCH), np.float32),
        own=np.concatenate(own_list) if own_list else np.zeros((0, len(OWN_FEATURES)), np.float32),
        pairs=counterparts(groups[0], groups[1]),
    )


def suppress(model_boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """The product's NMS (:func:`cad.detect.postprocess.nms`) with the second stage's tie rule:
    equal scores by position (x0, then y0), so the result never depends on the candidates' order."""
    boxes = np.asarray(model_boxes, dtype=np.float64).reshape(-1, 4)
    order = np.lexsort((boxes[:, 1], boxes[:, 0], -np.asarray(scores, dtype=np.float64)))
    return nms(boxes, np.asarray(scores, dtype=np.float64), iou, limit, order)


@dataclass(frozen=True)
class RescorerConfig:
    """Widths of the second-stage network (recorded in the model manifest)."""

    channels: tuple[int, ...] = (16, 32, 64, 64)
    embedding: int = 64
    hidden: int = 64
    counterparts: int = COUNTERPARTS
    #: dropout before each head's output layer while training (none at inference)
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RescorerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown second-stage settings: {', '.join(unknown)}")
        values = dict(data)
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        return cls(**values)


#: how a linked CC/MLO pair's finding score combines its two dual-view scores
FUSIONS = ("max", "mean", "noisy_or")


@dataclass(frozen=True)
class RescoreSettings:
    """Everything besides the weights that defines the second stage (manifest ``rescorer``)."""

    network: RescorerConfig = field(default_factory=lambda: RescorerConfig())
    blobs: BlobConfig = field(default_factory=BlobConfig)
    #: NMS between a view's rescored candidates (IoU above which the lower-scoring one goes)
    nms_iou: float = 0.3
    fusion: str = "max"

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"rescorer fusion {self.fusion!r} is not one of {', '.join(FUSIONS)}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"rescorer nms_iou {self.nms_iou} is outside (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network.to_dict(), "blobs": self.blobs.to_dict(), "nms_iou": self.nms_iou,
                "fusion": self.fusion}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RescoreSettings:
        unknown = sorted(set(data) - {"network", "blobs", "nms_iou", "fusion"})
        if unknown:
            raise ValueError(f"unknown rescorer settings: {', '.join(unknown)}")
        return cls(RescorerConfig.from_dict(data.get("network", {})), BlobConfig.from_dict(data.get("blobs", {})),
                   float(data.get("nms_iou", 0.3)), str(data.get("fusion", "max")))

    def combine(self, a: float, b: float) -> float:
        """A linked pair's finding score from its two dual-view scores."""
        if self.fusion == "max":
            return max(a, b)
        if self.fusion == "mean":
            return 0.5 * (a + b)
        return 1.0 - (1.0 - a) * (1.0 - b)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities of float64 logits (numerically safe at both ends)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))
