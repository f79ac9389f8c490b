"""Patch sampling and medically safe augmentation for training from scratch on a CPU.

Whole-image batches spend nearly all compute on background and barely learn in an hour on a
CPU (../shared/notes: 0.10 sensitivity at 1 FPI after 20 min versus 1.00 with patches), so
batches are patches: a set fraction centred (with jitter) on a mass, optionally a fraction
centred on the false marks a previous model makes on the training images (hard negatives: dense
tissue that looks like a mass), the rest anywhere in the breast. Augmentation never flips: after canonicalisation the
chest wall is on the left and
the top is lateral (CC) or superior (MLO); a flip would change that anatomical meaning.
Only small rotations, scale, contrast/brightness jitter and noise are applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from cad_tools.training.prepare import PreparedImage


@dataclass(frozen=True)
class AugmentConfig:
    max_rotation_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    contrast_range: tuple[float, float] = (0.8, 1.2)
    brightness: float = 0.2
    max_noise_sd: float = 0.15
    #: a box is kept when at least this fraction of it lies inside the patch
    min_visible: float = 0.5


def _transform_boxes(
    boxes: np.ndarray, centre: np.ndarray, angle: float, scale: float, size: int
) -> np.ndarray:
    """Boxes as inscribed ellipses through rotation+scale about ``centre`` into the patch."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4)
    c = (boxes[:, :2] + boxes[:, 2:]) / 2 - centre
    half = (boxes[:, 2:] - boxes[:, :2]) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    # patch = scale * R(-angle) (p - centre) + size/2
    px = scale * (cos * c[:, 0] + sin * c[:, 1]) + size / 2
    py = scale * (-sin * c[:, 0] + cos * c[:, 1]) + size / 2
    hw = scale * np.sqrt((half[:, 0] * cos) ** 2 + (half[:, 1] * sin) ** 2)
    hh = scale * np.sqrt((half[:, 0] * sin) ** 2 + (half[:, 1] * cos) ** 2)
    return np.stack([px - hw, py - hh, px + hw, py + hh], axis=1)


def _visible(boxes: np.ndarray, size: int, min_visible: float) -> np.ndarray:
    clipped = np.clip(boxes, 0, size)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    inside = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
    keep = inside >= min_visible * np.maximum(area, 1e-6)
    return clipped[keep]


class PatchSampler:
    """Draws augmented training patches from prepared whole images."""

    def __init__(
        self,
        images: list[PreparedImage],
        patch_size: int,
        positive_fraction: float,
        augment: AugmentConfig,
        rng: np.random.Generator,
        hard_negatives: list[tuple[int, np.ndarray]] | None = None,
        hard_negative_fraction: float = 0.0,
    ) -> None:
        self.images = images
        self.size = patch_size
        self.positive_fraction = positive_fraction
        self.augment = augment
        self.rng = rng
        self.positives = [(i, j) for i, im in enumerate(images) for j in range(len(im.boxes))]
        #: (image, centre x/y) of a network's false marks, drawn with ``hard_negative_fraction``
        self.hard_negatives = hard_negatives or []
        self.hard_negative_fraction = hard_negative_fraction if self.hard_negatives else 0.0
        if not images:
            raise ValueError("no training images")
        if positive_fraction + self.hard_negative_fraction > 1.0:
            raise ValueError("positive_fraction + hard_negative_fraction exceeds 1")

    def _centre(self) -> tuple[int, np.ndarray]:
        rng = self.rng
        draw = rng.random()
        if self.positives and draw < self.positive_fraction:
            i, j = self.positives[int(rng.integers(len(self.positives)))]
            box = self.images[i].boxes[j]
            centre = (box[:2] + box[2:]) / 2
            jitter = rng.uniform(-0.35, 0.35, size=2) * self.size
            return i, centre + jitter
        if draw < self.positive_fraction + self.hard_negative_fraction:
            i, centre = self.hard_negatives[int(rng.integers(len(self.hard_negatives)))]
            return i, centre + rng.uniform(-0.35, 0.35, size=2) * self.size
        i = int(rng.integers(len(self.images)))
        array = self.images[i].array
        # anywhere in the breast: a random pixel clearly above the background level
        floor = float(array.min()) + 0.3
        for _ in range(20):
            y, x = int(rng.integers(array.shape[0])), int(rng.integers(array.shape[1]))
            if array[y, x] > floor:
                break
        return i, np.array([x, y], dtype=np.float64)

    def sample(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One patch (1 x S x S) and its RetinaNet target."""
        aug, rng, size = self.augment, self.rng, self.size
        index, centre = self._centre()
        image = self.images[index]
        array = image.array.astype(np.float32)
        angle = math.radians(rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg))
        scale = rng.uniform(*aug.scale_range)
        cos, sin = math.cos(angle), math.sin(angle)
        # input (row, col) = M @ output (row, col) + offset
        matrix = np.array([[cos, sin], [-sin, cos]]) / scale
        half = np.array([size / 2, size / 2])
        centre_rc = centre[::-1]
        offset = centre_rc - matrix @ half
        background = float(array.min())
        patch = ndimage.affine_transform(
            array, matrix, offset=offset, output_shape=(size, size), order=1,
            mode="constant", cval=background,
        )
        patch = patch * rng.uniform(*aug.contrast_range) + rng.uniform(-aug.brightness, aug.brightness)
        patch = patch + rng.normal(0.0, rng.uniform(0, aug.max_noise_sd), size=patch.shape)
        boxes = _visible(_transform_boxes(image.boxes.astype(np.float64), centre, angle, scale, size),
                         size, aug.min_visible)
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.zeros(len(boxes), dtype=torch.int64),
        }
        return torch.from_numpy(patch.astype(np.float32))[None], target

    def batch(self, n: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        samples = [self.sample() for _ in range(n)]
        return [s[0] for s in samples], [s[1] for s in samples]
