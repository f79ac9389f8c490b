"""Breast landmarks in the canonical orientation (chest wall on the left, superior at the top).

* Pectoral muscle line on MLO: the bright muscle wedge in the upper chest-wall corner ends at
  a straight edge; per row, the strongest bright-to-dark step is a candidate edge point and a
  Theil-Sen fit (robust to tissue edges) gives the line.
* Nipple: the skin-contour point farthest from the chest wall (CC) or from the pectoral line
  (MLO), the standard posterior-nipple-line construction.

All coordinates here are (x, y) in working-mask pixels of the oriented image. Lengths below are
given in pixels of the default 0.5 mm working grid; ``scale``
(0.5 mm over the nominal working resolution) keeps them about the same in millimetres on another grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

#: working pixels (0.5 mm) excluded next to the skin when looking for the pectoral edge
SKIN_MARGIN_PX = 8
#: working pixels (0.5 mm) behind the most anterior contour point that still count as the tip
TIP_BAND_PX = 2


@dataclass(frozen=True)
class PectoralLine:
    """x = x_top + slope * y in oriented working pixels; meets the top edge at x_top."""

    x_top: float
    slope: float

    @property
    def y_chest_wall(self) -> float:
        """Where the line meets the chest-wall edge (x = 0)."""
        return -self.x_top / self.slope

    def endpoints(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return (self.x_top, 0.0), (0.0, self.y_chest_wall)

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Perpendicular distance of points from the line (positive on the breast side)."""
        distance: np.ndarray = (x - (self.x_top + self.slope * y)) / np.hypot(1.0, self.slope)
        return distance


def _px(length: float, scale: float) -> int:
    """A length in default-grid pixels as whole pixels of a grid ``scale`` times as fine."""
    return max(1, int(round(length * scale)))


def find_pectoral_line(image: np.ndarray, mask: np.ndarray, scale: float = 1.0) -> tuple[PectoralLine | None, str]:
    """Fit the pectoral edge on an oriented MLO working image; (None, why) when it is not found."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size < 10 * scale:
        return None, "breast too small to find the pectoral muscle"
    # normalised smoothing inside the breast, so the skin edge does not look like an edge
    sigma = 2.0 * scale
    weight = ndimage.gaussian_filter(mask.astype(np.float64), sigma)
    smooth = ndimage.gaussian_filter(np.where(mask, image, 0.0), sigma) / np.maximum(weight, 1e-6)
    gradient = ndimage.sobel(smooth, axis=1)  # along x; muscle edge is a drop (negative)
    interior = ndimage.binary_erosion(mask, iterations=_px(SKIN_MARGIN_PX, scale), border_value=1)
    gradient = np.where(interior, gradient, 0.0)
    top, bottom = int(rows[0]), int(rows[0] + 0.6 * (rows[-1] - rows[0]))
    xs: list[int] = []
    ys: list[int] = []
    for r in range(top, bottom):
        inside = np.flatnonzero(mask[r])
        if inside.size < 8:
            continue
        limit = int(inside[-1] * 0.75)
        if limit < 4:
            continue
        g = gradient[r, 2:limit]
        c = int(np.argmin(g)) + 2
        xs.append(c)
        ys.append(r)
    if len(xs) < 10:
        return None, "no pectoral edge candidates"
    x_arr, y_arr = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    tolerance = max(3.0 * scale, 0.04 * mask.shape[1])
    # the muscle is always present in the upper quarter of an MLO: fit there first, then
    # extend down to the rows whose edge continues the same line
    upper = y_arr <= top + 0.25 * (rows[-1] - rows[0])
    if upper.sum() < 6:
        return None, "too few rows in the upper breast"
    slope, intercept, _, _ = stats.theilslopes(x_arr[upper], y_arr[upper])
    if np.mean(np.abs(x_arr[upper] - (intercept + slope * y_arr[upper])) < tolerance) < 0.6:
        return None, "pectoral edge not a consistent straight line"
    inliers = np.abs(x_arr - (intercept + slope * y_arr)) < tolerance
    slope, intercept, _, _ = stats.theilslopes(x_arr[inliers], y_arr[inliers])
    if slope >= -0.05 or intercept <= 2 * scale:
        return None, "pectoral line has an implausible angle"
    return PectoralLine(float(intercept), float(slope)), "ok"


def find_nipple(
    mask: np.ndarray, boundary: np.ndarray, pectoral: PectoralLine | None = None, scale: float = 1.0
) -> tuple[float, float]:
    """The nipple as the most anterior skin-contour point, as (x, y).

    With the breast positioned "up and out" and the nipple in profile, the nipple is the
    anterior tip on both views. Points within ``TIP_BAND_PX`` of the tip are ties; among them
    the one farthest from the pectoral line (MLO) or the middle one (CC) is taken.
    """
    ys, xs = np.nonzero(boundary)
    # the image edges are not skin: ignore contour pixels on the borders
    valid = (xs > 0) & (ys > 0) & (ys < mask.shape[0] - 1) & (xs < mask.shape[1] - 1)
    if valid.any():
        xs, ys = xs[valid], ys[valid]
    tip = xs >= xs.max() - TIP_BAND_PX * scale
    xs, ys = xs[tip], ys[tip]
    if pectoral is not None:
        score = pectoral.distance(xs + 0.5, ys + 0.5)
        best = score >= score.max() - 0.5 * scale
    else:
        best = np.ones(xs.shape, dtype=bool)
    order = np.argsort(ys[best])
    pick = order[len(order) // 2]
    return float(xs[best][pick] + 0.5), float(ys[best][pick] + 0.5)
