"""Detector configuration: everything that defines the network and its input, as data.

The same record is stored in the locked model's manifest, so a model is rebuilt exactly as it
was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

BACKBONES = ("resnet18", "resnet34", "resnet50")


@dataclass(frozen=True)
class DetectorConfig:
    """RetinaNet architecture, model-input resolution and output limits."""

    backbone: str = "resnet18"
    fpn_channels: int = 128
    #: model-input resolution, mm per pixel (canonical, breast-cropped image)
    target_mm: float = 0.4
    #: anchor base sizes in model-input pixels, one per FPN level P3..P7
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    anchor_scales: tuple[float, ...] = (1.0, 1.26, 1.59)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    #: detections below this score are never reported (kept low so FROC curves can be drawn)
    score_floor: float = 0.02
    nms_iou: float = 0.3
    max_detections_per_view: int = 20
    #: normalised intensities are clipped to +-clip standard deviations
    clip: float = 6.0
    #: working resolution of the breast geometry (mask, crop, landmarks), mm per pixel; a model
    #: manifest without it means 0.5, the resolution every model up to 0.3.0 was trained with
    geometry_mm: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r} is not one of {', '.join(BACKBONES)}")
        if len(self.anchor_sizes) != 5:
            raise ValueError("anchor_sizes needs one size per FPN level P3..P7 (5 values)")
        if not 0.05 <= self.target_mm <= 2.0:
            raise ValueError(f"target_mm {self.target_mm} is outside 0.05-2.0 mm")
        if not 0.2 <= self.geometry_mm <= 2.0:
            raise ValueError(f"geometry_mm {self.geometry_mm} is outside 0.2-2.0 mm")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("anchor_sizes", "anchor_scales", "aspect_ratios"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown detector settings: {', '.join(unknown)}")
        values = dict(data)
        for key in ("anchor_sizes", "anchor_scales", "aspect_ratios"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)
