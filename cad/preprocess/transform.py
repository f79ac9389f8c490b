"""Exact coordinate transforms between original image pixels and model input.

Coordinates are continuous pixel-edge coordinates: pixel (row r, column c) covers
[c, c+1) x [r, r+1), so a box ``[x0, y0, x1, y1]`` with exclusive x1/y1 maps like its corners.
The transform is a horizontal and/or vertical flip (to the canonical orientation, chest wall on
the left) followed by a crop and an axis-aligned scale. It is affine and exactly invertible;
the image resampling in :meth:`CanonicalTransform.apply` uses the same mapping, so a point
and the pixel it lands on agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CanonicalTransform:
    """Original image (``width`` x ``height``) -> canonical, cropped, resampled model input."""

    width: int
    height: int
    flip_x: bool
    flip_y: bool
    #: crop window in oriented (flipped) coordinates: x0, y0, x1, y1
    crop: tuple[float, float, float, float]
    #: model-input size in pixels: (width, height)
    out_size: tuple[int, int]

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.crop
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"crop {self.crop} is empty")
        if self.out_size[0] < 1 or self.out_size[1] < 1:
            raise ValueError(f"out_size {self.out_size} must be positive")

    @property
    def scale(self) -> tuple[float, float]:
        """Model-input pixels per original pixel along x and y."""
        x0, y0, x1, y1 = self.crop
        return self.out_size[0] / (x1 - x0), self.out_size[1] / (y1 - y0)

    def forward_points(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) original (x, y) -> model input (x, y)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
        if self.flip_x:
            p[:, 0] = self.width - p[:, 0]
        if self.flip_y:
            p[:, 1] = self.height - p[:, 1]
        sx, sy = self.scale
        p[:, 0] = (p[:, 0] - self.crop[0]) * sx
        p[:, 1] = (p[:, 1] - self.crop[1]) * sy
        return p

    def backward_points(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) model input (x, y) -> original (x, y)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
        sx, sy = self.scale
        p[:, 0] = p[:, 0] / sx + self.crop[0]
        p[:, 1] = p[:, 1] / sy + self.crop[1]
        if self.flip_x:
            p[:, 0] = self.width - p[:, 0]
        if self.flip_y:
            p[:, 1] = self.height - p[:, 1]
        return p

    def _boxes(self, boxes: np.ndarray, forward: bool) -> np.ndarray:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        fn = self.forward_points if forward else self.backward_points
        a = fn(b[:, :2])
        c = fn(b[:, 2:])
        return np.concatenate([np.minimum(a, c), np.maximum(a, c)], axis=1)

    def forward_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) original [x0, y0, x1, y1] -> model input boxes (flips reorder corners)."""
        return self._boxes(boxes, forward=True)

    def backward_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) model-input boxes -> original [x0, y0, x1, y1]."""
        return self._boxes(boxes, forward=False)

    def orient(self, image: np.ndarray) -> np.ndarray:
        """Flip an original-resolution array into the canonical orientation (a view, no copy)."""
        out = image
        if self.flip_x:
            out = out[:, ::-1]
        if self.flip_y:
            out = out[::-1, :]
        return out

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Resample an original image to model input (float32), antialiased when shrinking."""
        if image.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"image is {image.shape[1]} x {image.shape[0]}, transform expects "
                f"{self.width} x {self.height}"
            )
        oriented = np.ascontiguousarray(self.orient(image), dtype=np.float32)
        pil = Image.fromarray(oriented, mode="F")
        out = pil.resize(self.out_size, resample=Image.Resampling.BILINEAR, box=self.crop)
        return np.asarray(out, dtype=np.float32)
