"""The numpy postprocessing a site runs equals torchvision's RetinaNet postprocessing (SRS-RT-009)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cad.detect.config import DetectorConfig
from cad.detect.postprocess import TOPK_CANDIDATES, decode_view, level_anchors, level_shapes
from cad_torch.network import build_detector
from cad_torch.runtime import decode_head_outputs

BOX_PX = 0.5  # the runtime parity tolerances of SRS-RT-003
SCORE = 1e-4


def _sorted(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((boxes[:, 1], boxes[:, 0], -scores))
    return boxes[order], scores[order]


@pytest.mark.req("SRS-RT-009")
@pytest.mark.parametrize("shape", [(256, 192), (640, 512), (320, 736)])
@pytest.mark.parametrize("config", [DetectorConfig(fpn_channels=8),
                                    DetectorConfig(fpn_channels=8, anchor_scales=(1.0,), aspect_ratios=(1.0,),
                                                   nms_iou=0.5, max_detections_per_view=50, score_floor=0.1)],
                         ids=["released-anchors", "one-anchor"])
def test_numpy_postprocessing_equals_torchvision(shape: tuple[int, int], config: DetectorConfig) -> None:
    network = build_detector(config).eval()
    anchors_per_location = len(config.anchor_scales) * len(config.aspect_ratios)
    count = sum(h * w for h, w in level_shapes(*shape)) * anchors_per_location
    rng = np.random.default_rng(sum(shape))
    # many candidates above the floor (top-k is exercised on P3), overlapping boxes (NMS decides)
    cls_logits = rng.normal(-3.0, 2.0, size=(2, count, 1)).astype(np.float32)
    bbox = rng.normal(0.0, 0.4, size=(2, count, 4)).astype(np.float32)
    bbox[1, ::7, 2:] = 6.0  # beyond the log-scale clip: decoding must clip as torchvision does
    p3 = len(level_anchors(config, *shape)[0])
    if p3 > 2 * TOPK_CANDIDATES:  # then top-k, not the floor, limits P3's candidates
        assert (1 / (1 + np.exp(-cls_logits[0, :p3])) > config.score_floor).sum() > TOPK_CANDIDATES
    reference = decode_head_outputs(network, shape, torch.from_numpy(cls_logits), torch.from_numpy(bbox))
    for k in range(2):
        boxes, scores = decode_view(config, shape, cls_logits[k], bbox[k])
        ref_boxes, ref_scores = reference[k]["boxes"].numpy(), reference[k]["scores"].numpy()
        assert len(boxes) == len(ref_boxes) and len(boxes) >= config.max_detections_per_view // 2
        (boxes, scores), (ref_boxes, ref_scores) = _sorted(boxes, scores), _sorted(ref_boxes, ref_scores)
        np.testing.assert_allclose(boxes, ref_boxes, atol=BOX_PX, rtol=0)
        np.testing.assert_allclose(scores, ref_scores, atol=SCORE, rtol=0)


@pytest.mark.req("SRS-RT-009")
def test_numpy_anchors_are_torchvisions() -> None:
    config = replace(DetectorConfig(fpn_channels=8), anchor_scales=(1.0, 1.26, 1.59))
    network = build_detector(config)
    height, width = 352, 288
    from torchvision.models.detection.image_list import ImageList

    features = [torch.empty(1, 0, h, w) for h, w in level_shapes(height, width)]
    (expected,) = network.anchor_generator(ImageList(torch.empty(1, 0, height, width), [(height, width)]), features)
    np.testing.assert_array_equal(np.concatenate(level_anchors(config, height, width)), expected.numpy())


@pytest.mark.req("SRS-RT-009")
def test_head_outputs_of_another_shape_are_refused() -> None:
    config = DetectorConfig(fpn_channels=8)
    with pytest.raises(ValueError, match="do not match a 256x192 input"):
        decode_view(config, (256, 192), np.zeros((10, 1), np.float32), np.zeros((10, 4), np.float32))
