"""Where a finding is, in the words of a breast-imaging report: laterality, clock-face position
and quadrant (or retroareolar / central), depth third and distance from the nipple.

Computed from the breast geometry the product already has for each view (nipple, pectoral line,
chest wall in the canonical frame) and the finding's box centre, with no learned part:

* distance from the nipple: the image distance (mm) from the nipple to the box centre, the mean
  of both views for a linked finding;
* depth: the distance behind the nipple along the posterior nipple line (CC: toward the chest
  wall; MLO: toward the pectoral line) as a fraction of that line's length; anterior, middle or
  posterior third;
* side: the signed offset from the nipple's level in the canonical frame; the CC view separates
  lateral from medial (the top of the canonical CC is lateral), the MLO view superior from
  inferior (its top is superolateral: the MLO offset mixes the two, see :data:`MLO_ANGLE_DEG`).
  Chosen on validation phantoms (seed 30031, truth boxes): measured along the pectoral line
  instead, the MLO offset takes in the lesion's depth and the clock was within one hour for 0.85
  of the masses; at the nipple's level, for 27 of 27;
* clock face (as seen facing the patient: 12 superior; 9 lateral on the right breast, 3 on the
  left) and quadrant from the two offsets of a linked finding. A single-view finding has no
  clock position: its view supports one side only (outer/inner from CC, upper/lower from MLO),
  and the location says which view it rests on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from cad.io.image import Laterality, View
from cad.preprocess.geometry import BreastGeometry
from cad.result.model import DEPTHS, FindingLocation

#: the assumed angle of the MLO projection from vertical (the phantom's; clinical units use
#: 40-60 degrees); the MLO offset is read as y sin(a) + z cos(a) of the lateral (y) and superior
#: (z) offsets
MLO_ANGLE_DEG = 45.0
#: within this distance from the nipple a finding is retroareolar (no quadrant)
RETROAREOLAR_MM = 20.0
#: closer than this to the nipple axis (both offsets) a finding is central (no clock position)
CENTRAL_MM = 10.0


@dataclass(frozen=True)
class ViewPosition:
    """A point of one view relative to its breast's landmarks."""

    view: View
    nipple_mm: float
    #: distance behind the nipple along the posterior nipple line / that line's length (None
    #: when the line is unknown: an MLO without a pectoral line)
    depth_fraction: float | None
    #: signed offset (mm) from the nipple's level: CC + lateral, MLO + superolateral
    offset_mm: float


def _canonical(geometry: BreastGeometry, points: np.ndarray) -> np.ndarray:
    return np.asarray(geometry.transform.forward_points(np.asarray(points, dtype=np.float64).reshape(-1, 2)))


def view_position(geometry: BreastGeometry, view: View, box: Iterable[float]) -> ViewPosition:
    """Position of a box centre (original pixels) on its view."""
    x0, y0, x1, y1 = (float(v) for v in box)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    mm = geometry.spacing_mm / geometry.transform.scale[0]  # canonical pixel size
    nipple_c, centre_c = _canonical(geometry, np.array(geometry.nipple)), _canonical(geometry, centre)
    nipple_c, centre_c = nipple_c[0], centre_c[0]
    # above or below the nipple's level: the top of the canonical frame is lateral (CC) or
    # superolateral (MLO: its vertical is the projection's oblique axis; measured along the
    # pectoral line instead, the offset takes in the lesion's depth)
    offset = float(nipple_c[1] - centre_c[1]) * mm
    to_nipple = geometry.pectoral_distance_px(*geometry.nipple) if view is View.MLO else None
    to_centre = geometry.pectoral_distance_px(*centre) if view is View.MLO else None
    if to_nipple is None or to_centre is None:  # CC (or an MLO without a pectoral line): chest wall at the left edge
        pnl = float(nipple_c[0]) * mm
        depth = float(nipple_c[0] - centre_c[0]) * mm
        fraction = depth / pnl if pnl > 0 and view is View.CC else None
    else:  # MLO: the posterior nipple line runs from the nipple square to the pectoral line
        pnl = to_nipple * geometry.spacing_mm
        depth = (to_nipple - to_centre) * geometry.spacing_mm
        fraction = depth / pnl if pnl > 0 else None
    return ViewPosition(view, geometry.nipple_distance_mm(*centre), None if fraction is None else
                        float(min(max(fraction, 0.0), 1.0)), offset)


def clock_hour(laterality: Laterality, lateral_mm: float, superior_mm: float) -> int:
    """Clock-face hour (1-12) of a point seen facing the patient: 12 superior, 6 inferior; the
    right breast's lateral side at 9, the left's at 3."""
    across = lateral_mm if laterality is Laterality.LEFT else -lateral_mm  # toward the viewer's right
    angle = math.degrees(math.atan2(across, superior_mm)) % 360.0
    hour = int(round(angle / 30.0)) % 12
    return 12 if hour == 0 else hour


def _depth(fractions: list[float]) -> str | None:
    if not fractions:
        return None
    mean = sum(fractions) / len(fractions)
    return DEPTHS[min(2, int(mean * 3))]


def locate(laterality: Laterality, positions: list[ViewPosition]) -> FindingLocation:
    """The location of a finding from its views' positions (one or two: CC and/or MLO)."""
    by_view = {p.view: p for p in positions}
    cc, mlo = by_view.get(View.CC), by_view.get(View.MLO)
    nipple = sum(p.nipple_mm for p in positions) / len(positions)
    depth = _depth([p.depth_fraction for p in positions if p.depth_fraction is not None])
    basis = "+".join(v.value for v in (View.CC, View.MLO) if v in by_view)
    retroareolar = nipple <= RETROAREOLAR_MM
    if cc is not None and mlo is not None:
        a = math.radians(MLO_ANGLE_DEG)
        lateral = cc.offset_mm
        superior = (mlo.offset_mm - lateral * math.sin(a)) / math.cos(a)
        central = math.hypot(lateral, superior) < CENTRAL_MM
        if retroareolar or central:
            return FindingLocation(basis, round(nipple, 1), depth, None, "retroareolar" if retroareolar else "central")
        region = f"{'upper' if superior >= 0 else 'lower'} {'outer' if lateral >= 0 else 'inner'}"
        return FindingLocation(basis, round(nipple, 1), depth, clock_hour(laterality, lateral, superior), region)
    if retroareolar:
        return FindingLocation(basis, round(nipple, 1), depth, None, "retroareolar")
    only = cc or mlo
    assert only is not None
    if abs(only.offset_mm) < CENTRAL_MM:
        side = None
    elif only.view is View.CC:
        side = "outer" if only.offset_mm > 0 else "inner"
    else:
        side = "upper" if only.offset_mm > 0 else "lower"
    return FindingLocation(basis, round(nipple, 1), depth, None, side)
