"""The locked detector's postprocessing in numpy: anchors, box decoding, score floor, top-k, NMS.

The site's runtimes compute only the network's head outputs (``cls_logits``,
``bbox_regression``: ONNX Runtime, TensorRT); everything after the heads is the code here, so a
site runs without torch. The PyTorch reference runtime keeps torchvision's own postprocessing
(:mod:`cad_torch.runtime`), the independent code this is compared with. The steps are those of torchvision's RetinaNet
(``AnchorGenerator``, ``BoxCoder`` with unit weights, ``postprocess_detections``, ``nms``), written
again in numpy on purpose (the site install must not need torchvision); their equality with
torchvision's is tested on random head outputs and on the parity phantoms
(tests/integration/test_onnx_runtime.py, SRS-RT-003). Boxes come back in original image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cad.detect.config import DetectorConfig
from cad.detect.inputs import ViewInput

#: the exported network part's input and outputs (ONNX graph, TensorRT engine bindings)
INPUT_NAME = "image"
OUTPUT_NAMES = ("cls_logits", "bbox_regression")
#: views of equal padded shape run together up to this many (an exam's four views at most
#: share two shapes; larger batches only pay off on a GPU)
DEFAULT_MAX_BATCH = 4
#: candidates kept per FPN level before NMS (torchvision RetinaNet's ``topk_candidates``)
TOPK_CANDIDATES = 1000
#: the largest log-scale of a decoded box (torchvision BoxCoder's ``bbox_xform_clip``)
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class ViewDetections:
    """Detections on one view, highest score first."""

    boxes: np.ndarray  # (N, 4) original image pixels [x0, y0, x1, y1]
    model_boxes: np.ndarray  # (N, 4) model-input pixels
    scores: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.scores)


def shape_batches(inputs: list[ViewInput], max_batch: int) -> list[list[int]]:
    """Indices of ``inputs`` grouped into batches of equal padded shape, at most ``max_batch``
    each, in order of first appearance.

    Only views of identical shape share a batch, so no view is padded beyond its own stride
    padding and its detections never depend on the size of its batch-mates.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch}")
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, view in enumerate(inputs):
        groups.setdefault(tuple(view.array.shape), []).append(index)
    return [group[k:k + max_batch] for group in groups.values() for k in range(0, len(group), max_batch)]


def level_shapes(height: int, width: int, levels: int = 5) -> list[tuple[int, int]]:
    """Feature-map sizes of the FPN levels P3..P7 for a (height, width) input.

    P3-P5 come from the ResNet strides 8, 16, 32; P6 and P7 from LastLevelP6P7's 3x3 stride-2
    convolutions (padding 1), which round up.
    """
    shapes = [(height // 8, width // 8), (height // 16, width // 16), (height // 32, width // 32)]
    while len(shapes) < levels:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def cell_anchors(config: DetectorConfig) -> list[np.ndarray]:
    """Per FPN level, the anchors centred on the origin (A, 4), float32, in torchvision's order
    (aspect ratio major, scale minor; rounded to whole pixels)."""
    ratios = np.asarray(config.aspect_ratios, dtype=np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    cells = []
    for base in config.anchor_sizes:
        scales = np.asarray([int(round(base * k)) for k in config.anchor_scales], dtype=np.float32)
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        cells.append(np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)).astype(np.float32))
    return cells


@lru_cache(maxsize=16)
def _level_anchors(config_key: tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]],
                   height: int, width: int) -> tuple[np.ndarray, ...]:
    sizes, scales, ratios = config_key
    config = DetectorConfig(anchor_sizes=sizes, anchor_scales=scales, aspect_ratios=ratios)
    anchors = []
    for (grid_h, grid_w), cell in zip(level_shapes(height, width, len(sizes)), cell_anchors(config)):
        stride_h, stride_w = height // grid_h, width // grid_w
        shift_y, shift_x = np.meshgrid(np.arange(grid_h, dtype=np.int64) * stride_h,
                                       np.arange(grid_w, dtype=np.int64) * stride_w, indexing="ij")
        shifts = np.stack([shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel()], axis=1)
        level = (shifts[:, None, :].astype(np.float32) + cell[None, :, :]).reshape(-1, 4)
        level.flags.writeable = False
        anchors.append(level)
    return tuple(anchors)


def level_anchors(config: DetectorConfig, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Anchors (HWA, 4) of each FPN level for a padded (height, width) input, in the order of the
    head outputs (location row-major, then the level's anchors); cached per shape."""
    return _level_anchors((tuple(config.anchor_sizes), tuple(config.anchor_scales), tuple(config.aspect_ratios)),
                          height, width)


def decode_boxes(deltas: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Box regression (dx, dy, dw, dh) relative to ``anchors`` -> boxes [x0, y0, x1, y1], float32."""
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    ctr_x = anchors[:, 0] + np.float32(0.5) * widths
    ctr_y = anchors[:, 1] + np.float32(0.5) * heights
    dw = np.minimum(deltas[:, 2], np.float32(BBOX_XFORM_CLIP))
    dh = np.minimum(deltas[:, 3], np.float32(BBOX_XFORM_CLIP))
    pred_x = deltas[:, 0] * widths + ctr_x
    pred_y = deltas[:, 1] * heights + ctr_y
    half_w = np.float32(0.5) * (np.exp(dw) * widths)
    half_h = np.float32(0.5) * (np.exp(dh) * heights)
    return np.stack([pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h], axis=1).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int, order: np.ndarray | None = None) -> np.ndarray:
    """Greedy non-maximum suppression as torchvision's ``nms`` (a box is dropped when its IoU with
    a kept, higher-scoring box exceeds ``iou``): indices of at most ``limit`` kept boxes, in
    ``order``, by default highest score first with equal scores in their input order. The one
    NMS of the product: the detector's, and the second stage's with its own tie rule."""
    order = np.argsort(-scores, kind="stable") if order is None else np.asarray(order, dtype=np.int64)
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(order), dtype=bool)
    kept: list[int] = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        kept.append(i)
        if len(kept) >= limit:
            break
        rest = np.flatnonzero(alive[i + 1:]) + i + 1
        lo = np.maximum(boxes[rest, :2], boxes[i, :2])
        hi = np.minimum(boxes[rest, 2:], boxes[i, 2:])
        inter = np.prod(np.maximum(hi - lo, np.float32(0)), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):  # two empty boxes: 0/0, never above iou
            overlap = inter / (area[i] + area[rest] - inter)
        alive[rest[overlap > np.float32(iou)]] = False
    return order[np.asarray(kept, dtype=np.int64)]


def decode_view(config: DetectorConfig, image_shape: tuple[int, int], cls_logits: np.ndarray,
                bbox_regression: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One view's detections (boxes in padded model-input pixels, scores) from its head outputs
    (``cls_logits`` [HWA, 1], ``bbox_regression`` [HWA, 4]): per level the score floor and the top
    :data:`TOPK_CANDIDATES`, decoding, clipping to the padded input, then NMS over all levels and
    the per-view limit."""
    height, width = image_shape
    anchors = level_anchors(config, height, width)
    total = sum(len(a) for a in anchors)
    if cls_logits.shape[0] != total or cls_logits.shape[-1] != 1:
        raise ValueError(f"head outputs ({cls_logits.shape[0]} anchors x {cls_logits.shape[-1]} classes) do not "
                         f"match a {height}x{width} input ({total} anchors, one class)")
    boxes_out, scores_out = [], []
    start = 0
    for level in anchors:
        stop = start + len(level)
        logits = cls_logits[start:stop, 0].astype(np.float32)
        with np.errstate(over="ignore"):  # exp overflows to inf for very negative logits: score 0, as torch's
            scores = np.float32(1) / (np.float32(1) + np.exp(-logits))
        candidates = np.flatnonzero(scores > np.float32(config.score_floor))
        if len(candidates) > TOPK_CANDIDATES:
            candidates = candidates[np.argsort(-scores[candidates], kind="stable")[:TOPK_CANDIDATES]]
        boxes = decode_boxes(bbox_regression[start + candidates].astype(np.float32), level[candidates])
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        boxes_out.append(boxes)
        scores_out.append(scores[candidates])
        start = stop
    boxes, scores = np.concatenate(boxes_out), np.concatenate(scores_out)
    keep = nms(boxes, scores, config.nms_iou, config.max_detections_per_view)
    return boxes[keep], scores[keep]


def view_detections(model_boxes: np.ndarray, scores: np.ndarray, view: ViewInput) -> ViewDetections:
    """Detections of one view: clipped to the unpadded input, sorted by descending score (ties by
    position), mapped back to original pixels."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    model_boxes = np.asarray(model_boxes, dtype=np.float64).reshape(-1, 4).copy()
    width, height = view.size
    model_boxes[:, 0::2] = np.clip(model_boxes[:, 0::2], 0, width)
    model_boxes[:, 1::2] = np.clip(model_boxes[:, 1::2], 0, height)
    order = np.lexsort((model_boxes[:, 1], model_boxes[:, 0], -scores))
    model_boxes, scores = model_boxes[order], scores[order]
    return ViewDetections(view.to_original(model_boxes), model_boxes, scores)


#: computes the head outputs (``cls_logits`` [N, HWA, 1], ``bbox_regression`` [N, HWA, 4]) of a
#: float32 batch [N, 1, H, W]
HeadRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def detect_with_heads(config: DetectorConfig, inputs: list[ViewInput], max_batch: int,
                      run_heads: HeadRunner) -> list[ViewDetections]:
    """Detections of views whose heads a runtime computes, in batches of equal shape
    (:func:`shape_batches`), decoded by :func:`decode_view`."""
    results: list[ViewDetections | None] = [None] * len(inputs)
    for batch in shape_batches(inputs, max_batch):
        array = np.ascontiguousarray(np.stack([inputs[i].array for i in batch])[:, None], dtype=np.float32)
        cls_logits, bbox_regression = run_heads(array)
        shape = (int(array.shape[-2]), int(array.shape[-1]))
        for k, index in enumerate(batch):
            boxes, scores = decode_view(config, shape, np.asarray(cls_logits[k]), np.asarray(bbox_regression[k]))
            results[index] = view_detections(boxes, scores, inputs[index])
    return [r for r in results if r is not None]
