"""Breast segmentation robust to burned-in labels, markers and collimation bands.

Works on a block-averaged copy at about 0.5 mm per pixel: the breast is the large bright
region that touches the chest-wall edge; labels, skin markers and nipple BBs are separate small
components; collimation bands are full-width bright strips along the top or bottom edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cad.errors import CadError

WORKING_MM = 0.5
#: display value treated as saturated (burned-in text and markers are drawn at full scale)
SATURATED = 0.97
#: largest saturated blob (mm^2, grown by 1 mm) treated as a marker or label, not anatomy
MARKER_MAX_MM2 = 400.0


class NoBreastError(CadError, ValueError):
    """The image holds no breast region: an input condition recorded as the image's reason,
    unlike any other exception in geometry, which is a defect."""


@dataclass(frozen=True)
class BreastMask:
    """Breast mask at working resolution; ``factor`` original pixels per mask pixel."""

    mask: np.ndarray
    factor: int
    chest_wall_left: bool
    threshold: float
    #: the block-averaged image the mask was computed on (same grid as ``mask``)
    working_image: np.ndarray
    #: fraction of the rows in which the breast touches the left and the right image edge
    edge_cover: tuple[float, float] = (0.0, 0.0)

    @property
    def chest_wall_clear(self) -> bool:
        """Whether the pixels say clearly which edge is the chest wall: the breast lies along at
        least a quarter of that edge and along at most half as much of the other (RC-032)."""
        high, low = max(self.edge_cover), min(self.edge_cover)
        return high >= 0.25 and low <= 0.5 * high

    def contains(self, x: float, y: float) -> bool:
        """Whether an original-pixel point lies inside the breast."""
        r, c = int(y // self.factor), int(x // self.factor)
        if not (0 <= r < self.mask.shape[0] and 0 <= c < self.mask.shape[1]):
            return False
        return bool(self.mask[r, c])

    def bbox(self) -> tuple[int, int, int, int]:
        """Breast bounding box in original pixels [x0, y0, x1, y1] (exclusive ends)."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        f = self.factor
        return int(cols[0] * f), int(rows[0] * f), int((cols[-1] + 1) * f), int((rows[-1] + 1) * f)

    def boundary(self) -> np.ndarray:
        """Boolean map of breast pixels that touch the background (the skin contour)."""
        boundary: np.ndarray = self.mask & ~ndimage.binary_erosion(self.mask, border_value=1)
        return boundary


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average non-overlapping factor x factor blocks (edge blocks padded by replication)."""
    if factor <= 1:
        return image.astype(np.float32)
    rows, cols = image.shape
    pr, pc = (-rows) % factor, (-cols) % factor
    padded = np.pad(image.astype(np.float32), ((0, pr), (0, pc)), mode="edge")
    means: np.ndarray = padded.reshape(padded.shape[0] // factor, factor, -1, factor).mean(axis=(1, 3))
    return means


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def _remove_collimation(fg: np.ndarray) -> np.ndarray:
    """Clear full-width bright bands that start at the top or bottom image edge."""
    out = fg.copy()
    full = fg.mean(axis=1) > 0.9
    limit = max(1, fg.shape[0] // 8)
    for order in (range(limit), range(fg.shape[0] - 1, fg.shape[0] - 1 - limit, -1)):
        for r in order:
            if not full[r]:
                break
            out[r] = False
    return out


def _suppress_markers(image: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Blank small saturated blobs: burned-in text, lead letters and nipple/skin BB markers.

    Such marks are drawn or exposed at (near) full scale; breast tissue is not, so removing
    small saturated components cannot remove breast, while it stops a BB touching the skin
    from becoming the "nipple".
    """
    saturated = image >= SATURATED
    if not saturated.any():
        return image
    grown = ndimage.binary_dilation(saturated, iterations=2)
    labels, count = ndimage.label(grown)
    sizes = ndimage.sum_labels(grown, labels, index=np.arange(1, count + 1)) * pixel_mm**2
    small_ids = np.flatnonzero(sizes <= MARKER_MAX_MM2) + 1
    out = image.copy()
    out[np.isin(labels, small_ids)] = 0.0
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` in one labelling pass: background components (4-
    connected, as scipy's default) that do not touch the image border are holes. Same result,
    without scipy's iterate-to-convergence dilation (the geometry's slowest step)."""
    labels, _ = ndimage.label(~mask)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    filled: np.ndarray = mask | ~np.isin(labels, border[border > 0]) & (labels > 0)
    return filled


def segment_breast(pixels: np.ndarray, spacing_mm: float, working_mm: float = WORKING_MM) -> BreastMask:
    """Segment the breast in a display-space image (values in [0, 1], breast bright), on a
    block-averaged copy at about ``working_mm`` per pixel."""
    factor = max(1, int(round(working_mm / spacing_mm)))
    # lengths below are in pixels of the 0.5 mm grid they were tuned on
    steps = max(1, int(round(2 * WORKING_MM / working_mm)))
    working = block_mean(pixels, factor)
    small = ndimage.uniform_filter(_suppress_markers(working, spacing_mm * factor), size=3)
    threshold = float(np.clip(0.35 * otsu_threshold(small), 0.02, 0.2))
    fg = _remove_collimation(small > threshold)
    # detach thin bridges (labels, markers touching the skin) before choosing the breast
    opened = ndimage.binary_opening(fg, structure=np.ones((3, 3), bool), iterations=steps)
    labels, count = ndimage.label(opened, structure=np.ones((3, 3), bool))
    if count == 0:
        raise NoBreastError("no breast found: the image has no region brighter than background")
    sizes = ndimage.sum_labels(opened, labels, index=np.arange(1, count + 1))
    edge_labels = set(np.unique(labels[:, 0])) | set(np.unique(labels[:, -1]))
    candidates = [i + 1 for i in np.argsort(-sizes) if (i + 1) in edge_labels]
    chosen = candidates[0] if candidates else int(np.argmax(sizes)) + 1
    mask = fill_holes(labels == chosen)
    # restore the skin pixels the opening shaved off, without re-attaching other components
    mask = ndimage.binary_dilation(mask, iterations=steps) & fg
    mask = fill_holes(mask)
    left = int(mask[:, :2].sum())
    right = int(mask[:, -2:].sum())
    rows = max(1, mask.shape[0])
    return BreastMask(
        mask=mask,
        factor=factor,
        chest_wall_left=left >= right,
        threshold=threshold,
        working_image=working,
        edge_cover=(float(mask[:, :2].any(axis=1).sum()) / rows, float(mask[:, -2:].any(axis=1).sum()) / rows),
    )
