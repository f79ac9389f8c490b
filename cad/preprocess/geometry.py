"""Breast geometry of one image: mask, canonical transform to model input, and landmarks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from cad.errors import CadError
from cad.io.image import Laterality, MammogramImage, View
from cad.preprocess.landmarks import PectoralLine, find_nipple, find_pectoral_line
from cad.preprocess.mask import WORKING_MM, BreastMask, segment_breast
from cad.preprocess.transform import CanonicalTransform

#: Model input resolution (mm per pixel) and the breast margin kept around the crop.
DEFAULT_TARGET_MM = 0.4
CROP_MARGIN_MM = 4.0


class OrientationMismatchError(CadError, ValueError):
    """The header's PatientOrientation puts the chest wall on the other side than the image
    clearly shows it: the header cannot be trusted for this image (RC-032)."""


@dataclass(frozen=True)
class BreastGeometry:
    """Geometry of one image. Points are (x, y) in original image pixels."""

    mask: BreastMask
    transform: CanonicalTransform
    nipple: tuple[float, float]
    pectoral_line: tuple[tuple[float, float], tuple[float, float]] | None
    spacing_mm: float
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def nipple_distance_mm(self, x: float, y: float) -> float:
        """Distance of an original-pixel point from the nipple, in mm."""
        return float(np.hypot(x - self.nipple[0], y - self.nipple[1]) * self.spacing_mm)

    def pectoral_distance_px(self, x: float, y: float) -> float | None:
        """Distance of an original-pixel point from the pectoral line, in original pixels (None
        where the view has no pectoral line): how deep a point lies on an MLO."""
        if self.pectoral_line is None:
            return None
        (ax, ay), (bx, by) = self.pectoral_line
        dx, dy = bx - ax, by - ay
        norm = math.hypot(dx, dy) or 1.0
        return float(abs(dy * (x - ax) - dx * (y - ay)) / norm)


def _orientation_from_header(image: MammogramImage) -> tuple[bool | None, bool]:
    """(chest wall on the left?, vertical flip needed?) from PatientOrientation, if present."""
    if image.patient_orientation is None:
        return None, False
    row_dir, col_dir = (s.upper() for s in image.patient_orientation)
    chest_left: bool | None = None
    if row_dir.startswith("A"):
        chest_left = True
    elif row_dir.startswith("P"):
        chest_left = False
    # canonical: superior (MLO) / lateral (CC) at the top, so rows run toward foot / medial
    flip_y = False
    if image.view is View.MLO and "H" in col_dir:
        flip_y = True
    if image.view is View.CC:
        lateral = "L" if image.laterality is Laterality.LEFT else "R"
        if col_dir == lateral:
            flip_y = True
    return chest_left, flip_y


def _crop_window(
    bbox_oriented: tuple[float, float, float, float], width: int, height: int, margin_px: float
) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = bbox_oriented
    return (
        0.0,  # keep the chest-wall edge: posterior tissue matters
        max(0.0, y0 - margin_px),
        min(float(width), x1 + margin_px),
        min(float(height), y1 + margin_px),
    )


def compute_geometry(
    image: MammogramImage, target_mm: float = DEFAULT_TARGET_MM, working_mm: float = WORKING_MM
) -> BreastGeometry:
    """Segment the breast, choose the canonical orientation and find the landmarks, working at
    about ``working_mm`` per pixel (a locked model's ``geometry_mm``)."""
    pixels = image.pixels
    height, width = pixels.shape
    spacing = image.spacing.mean_mm
    mask = segment_breast(pixels, spacing, working_mm)
    warnings: list[str] = []
    header_left, flip_y = _orientation_from_header(image)
    if header_left is not None and header_left != mask.chest_wall_left:
        found = "left" if mask.chest_wall_left else "right"
        said = "\\".join(image.patient_orientation or ())
        if mask.chest_wall_clear:  # the header contradicts the image: neither can be trusted
            raise OrientationMismatchError(
                f"the chest wall is on the {found} of the image but PatientOrientation ({said}) puts it on the "
                f"{'right' if mask.chest_wall_left else 'left'}: the header's orientation does not match the image")
        warnings.append(f"chest wall side not clear in the image (found {found}, PatientOrientation {said} says "
                        "otherwise); the image is used as found")
    flip_x = not mask.chest_wall_left

    # oriented crop from the mask bbox (original pixels -> oriented pixels)
    x0, y0, x1, y1 = mask.bbox()
    if flip_x:
        x0, x1 = width - x1, width - x0
    if flip_y:
        y0, y1 = height - y1, height - y0
    crop = _crop_window((x0, y0, x1, y1), width, height, CROP_MARGIN_MM / spacing)
    scale = spacing / target_mm
    out_size = (
        max(1, int(round((crop[2] - crop[0]) * scale))),
        max(1, int(round((crop[3] - crop[1]) * scale))),
    )
    transform = CanonicalTransform(width, height, flip_x, flip_y, crop, out_size)

    # landmarks on the oriented working-resolution grid
    f = mask.factor
    grid_h, grid_w = mask.mask.shape
    scale = WORKING_MM / working_mm  # the landmark lengths were tuned on the default grid

    def orient_grid(a: np.ndarray) -> np.ndarray:
        a = a[:, ::-1] if flip_x else a
        return a[::-1, :] if flip_y else a

    oriented_mask = orient_grid(mask.mask)
    boundary = oriented_mask & ~ndimage.binary_erosion(oriented_mask, border_value=1)
    pectoral: PectoralLine | None = None
    if image.view is View.MLO:
        pectoral, why = find_pectoral_line(orient_grid(mask.working_image), oriented_mask, scale)
        if pectoral is None:
            warnings.append(f"pectoral line not found: {why}")
    nx, ny = find_nipple(oriented_mask, boundary, pectoral, scale)

    def to_original(x: float, y: float) -> tuple[float, float]:
        gx = grid_w - x if flip_x else x
        gy = grid_h - y if flip_y else y
        return float(min(gx * f, width)), float(min(gy * f, height))

    line = None
    if pectoral is not None:
        a, b = pectoral.endpoints()
        line = (to_original(*a), to_original(*b))
    return BreastGeometry(
        mask=mask,
        transform=transform,
        nipple=to_original(nx, ny),
        pectoral_line=line,
        spacing_mm=spacing,
        warnings=tuple(warnings),
    )

