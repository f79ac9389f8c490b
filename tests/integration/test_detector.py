"""The per-view detector: configurable backbones and exact mapping back to original pixels."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cad.analysis.pipeline import detect_views
from cad.detect.config import DetectorConfig
from cad.detect.locked import load_locked_model
from cad.io import read_image
from cad_torch.network import build_detector, locked_network
from cad_torch.runtime import TorchRuntime


@pytest.mark.req("SRS-DET-001")
@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50"])
def test_backbones_build_and_keep_the_input_scale(backbone: str) -> None:
    network = build_detector(DetectorConfig(backbone=backbone, fpn_channels=32)).eval()
    with torch.inference_mode():
        out = network([torch.randn(1, 200, 136)])[0]
    assert set(out) == {"boxes", "scores", "labels"}
    boxes = out["boxes"]
    # no resizing inside the network: boxes live in the 136 x 200 input
    assert bool((boxes[:, 2] <= 136).all()) and bool((boxes[:, 3] <= 200).all())


@pytest.mark.req("SRS-DET-001")
def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="resnet101"):
        DetectorConfig(backbone="resnet101")


@pytest.mark.req("SRS-DET-001")
def test_mirrored_image_gives_mirrored_detections(mass_phantom_dir: Path) -> None:
    model = load_locked_model()
    image = read_image(mass_phantom_dir / "exam00000" / "R_CC.dcm")
    mirrored = replace(image, pixels=np.ascontiguousarray(image.pixels[:, ::-1]), patient_orientation=None)
    (a,), _ = detect_views(model, [image], TorchRuntime(model, max_batch=1))
    (b,), _ = detect_views(model, [mirrored], TorchRuntime(model, max_batch=1))
    width = image.shape[1]
    strong_a = a.detections.scores >= model.operating_threshold
    assert strong_a.any(), "the fixture exam's right CC should carry a mark"
    for box, score in zip(a.detections.boxes[strong_a], a.detections.scores[strong_a]):
        expected = np.array([width - box[2], box[1], width - box[0], box[3]])
        distance = np.abs(b.detections.boxes - expected).max(axis=1)
        k = int(distance.argmin())
        assert distance[k] <= 2.0, f"mirrored box off by {distance[k]:.2f} px"
        assert abs(b.detections.scores[k] - score) <= 0.02


@pytest.mark.req("SRS-RT-003")
@pytest.mark.parametrize("shape", [(64, 64), (96, 160), (224, 128), (1024, 736)])  # padded to the stride
def test_level_shapes_match_the_torchvision_backbone(shape: tuple[int, int]) -> None:
    """The one place torchvision internals are re-derived (feature-map sizes for the anchors of
    externally computed heads): fails if a torchvision change alters the FPN's strides."""
    import torch

    from cad.detect.postprocess import level_shapes

    network = locked_network(load_locked_model())
    with torch.inference_mode():
        features = network.backbone(torch.zeros(1, 1, *shape))
    assert level_shapes(*shape, len(features)) == [tuple(f.shape[-2:]) for f in features.values()]
