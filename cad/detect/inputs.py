"""Model input for one view: canonical, breast-cropped, resampled and normalised.

Training and inference both go through :func:`prepare_view`, so the network always sees the
same kind of input, and boxes map back to original pixels through the view's exact
:class:`~cad.preprocess.transform.CanonicalTransform`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cad.detect.config import DetectorConfig
from cad.io.image import MammogramImage
from cad.preprocess.geometry import BreastGeometry, compute_geometry

#: the network's coarsest stride: inputs are padded to a multiple of it
SIZE_DIVISIBLE = 32


@dataclass(frozen=True)
class ViewInput:
    """The normalised model input (float32, padded) and the geometry that produced it.

    ``array`` is padded on the right and bottom with the background value to a multiple of
    :data:`SIZE_DIVISIBLE`, as training patches are filled, so the network never sees the
    artificial tissue-level band that zero padding of a normalised image would add.
    ``size`` is the unpadded (width, height), the extent that maps back to the image.
    """

    array: np.ndarray
    geometry: BreastGeometry
    size: tuple[int, int] = (0, 0)

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Model-input boxes -> original image pixels."""
        return self.geometry.transform.backward_boxes(boxes)

    def to_model(self, boxes: np.ndarray) -> np.ndarray:
        """Original image boxes -> model-input pixels."""
        return self.geometry.transform.forward_boxes(boxes)


def normalise(canonical: np.ndarray, threshold: float, clip: float) -> np.ndarray:
    """Zero mean, unit variance over the breast (pixels above the mask threshold)."""
    breast = canonical[canonical > threshold]
    if breast.size < 64:
        breast = canonical.ravel()
    mean = float(breast.mean())
    std = float(breast.std()) or 1.0
    return np.clip((canonical - mean) / std, -clip, clip).astype(np.float32)


def prepare_view(
    image: MammogramImage, config: DetectorConfig, geometry: BreastGeometry | None = None
) -> ViewInput:
    """Geometry (if not given), canonical resampling at ``config.target_mm`` and normalisation."""
    if geometry is None:
        geometry = compute_geometry(image, config.target_mm, config.geometry_mm)
    canonical = geometry.transform.apply(image.pixels)
    array = normalise(canonical, geometry.mask.threshold, config.clip)
    return ViewInput(pad_to_stride(array), geometry, (array.shape[1], array.shape[0]))


def pad_to_stride(array: np.ndarray) -> np.ndarray:
    """Pad right/bottom with the image's background (minimum) value to the network stride."""
    height, width = array.shape
    pad_h, pad_w = (-height) % SIZE_DIVISIBLE, (-width) % SIZE_DIVISIBLE
    if not (pad_h or pad_w):
        return array
    return np.pad(array, ((0, pad_h), (0, pad_w)), constant_values=float(array.min()))
