"""torchvision RetinaNet (ResNet + FPN, focal loss) for one-channel mammograms."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from cad.detect.config import DetectorConfig

_RESNETS = {"resnet18": (resnet18, 512), "resnet34": (resnet34, 512), "resnet50": (resnet50, 2048)}


class PreparedInputTransform(GeneralizedRCNNTransform):  # type: ignore[misc]  # torchvision has no type hints
    """Batching and padding only: inputs arrive already resampled and normalised by
    :mod:`cad.detect.inputs`, so resizing here would break the exact box mapping."""

    def resize(self, image: torch.Tensor, target=None):  # type: ignore[no-untyped-def]
        return image, target


def build_detector(config: DetectorConfig) -> RetinaNet:
    """A randomly initialised RetinaNet for ``config`` (one class: mass)."""
    factory, c5_channels = _RESNETS[config.backbone]
    body = factory(weights=None)
    body.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    in_channels = [c5_channels // 4, c5_channels // 2, c5_channels]
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=in_channels,
        out_channels=config.fpn_channels,
        extra_blocks=LastLevelP6P7(config.fpn_channels, config.fpn_channels),
    )
    sizes = tuple(tuple(int(round(s * k)) for k in config.anchor_scales) for s in config.anchor_sizes)
    anchors = AnchorGenerator(sizes, (tuple(config.aspect_ratios),) * len(sizes))
    model = RetinaNet(
        backbone,
        num_classes=1,
        anchor_generator=anchors,
        score_thresh=config.score_floor,
        nms_thresh=config.nms_iou,
        detections_per_img=config.max_detections_per_view,
        topk_candidates=1000,
    )
    model.transform = PreparedInputTransform(
        min_size=1, max_size=1, image_mean=[0.0], image_std=[1.0], size_divisible=32
    )
    return model
