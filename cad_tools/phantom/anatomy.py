"""The 3D model of one breast and its lesions, and how it projects into CC and MLO views.

Breast frame (mm): ``x`` from the chest wall toward the nipple, ``y`` medial (-) to lateral (+),
``z`` inferior (-) to superior (+). The breast is a half-ellipsoid with semi-axes
(``depth``, ``half_width``, ``half_height``). A view projects along its compression axis onto an
image plane whose canonical frame has the chest wall at the left edge (``X`` = ``x``) and the
lateral (CC) or superolateral (MLO) side at the top. The right breast is rendered in the same
canonical frame and mirrored when written, as a mammography unit displays it.

Because ``X`` is ``x`` in both views, a lesion keeps its distance from the chest wall (and so,
approximately, from the nipple) between CC and MLO: the cue radiologists and the CAD use to link
the two views.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

MLO_ANGLE_DEG = 45.0


class DensityCategory(str, enum.Enum):
    """BI-RADS breast density (5th edition) with the phantom's fibroglandular fraction."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"

    @property
    def glandular_fraction(self) -> float:
        return {"A": 0.08, "B": 0.2, "C": 0.38, "D": 0.58}[self.value]


class LesionType(str, enum.Enum):
    MASS = "mass"
    CALCIFICATION_CLUSTER = "calcification_cluster"


class MassShape(str, enum.Enum):
    ROUND = "round"
    OVAL = "oval"
    IRREGULAR = "irregular"
    SPICULATED = "spiculated"


@dataclass(frozen=True)
class ViewGeometry:
    """How breast-frame points map to a view's canonical image plane (mm)."""

    name: str
    #: unit vectors in the breast frame: image X (right), image Y (down), projection direction
    e_x: np.ndarray
    e_y: np.ndarray
    d: np.ndarray
    #: row (mm from the top) of the breast axis through the nipple
    centre_row_mm: float
    #: half-height of the breast outline on the image (mm)
    half_height_mm: float
    #: half-extent of the 3D breast along -e_y, used to scale into the outline
    model_half_extent_mm: float
    compressed_thickness_mm: float

    def project(self, point: np.ndarray) -> tuple[float, float]:
        """Breast-frame point -> canonical image (X, Y) in mm."""
        vertical = float(np.dot(point, -self.e_y))
        scale = self.half_height_mm / self.model_half_extent_mm
        return float(point[0]), self.centre_row_mm - vertical * scale


@dataclass(frozen=True)
class Lesion:
    """A lesion in the breast frame. ``diameter_mm`` is the nominal size of the core."""

    lesion_id: str
    type: LesionType
    centre: np.ndarray
    diameter_mm: float
    shape: MassShape | None
    #: ellipsoids (centre offset, semi-axes, rotation) whose union is the mass core
    parts: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...] = ()
    #: spicules as 3D segments (start, end, radius mm) relative to the centre
    spicules: tuple[tuple[np.ndarray, np.ndarray, float], ...] = ()
    #: calcification specks: offsets from the centre (mm) and radii (mm)
    specks: tuple[tuple[np.ndarray, float], ...] = ()
    #: views in which the lesion is rendered ("CC", "MLO"); the other is occluded/out of field
    visible_in: tuple[str, ...] = ("CC", "MLO")
    #: attenuation contrast multiplier (1 = typical)
    contrast: float = 1.0


@dataclass
class BreastModel:
    """One breast of one exam."""

    laterality: str
    depth_mm: float
    half_width_mm: float
    half_height_mm: float
    cc_thickness_mm: float
    mlo_thickness_mm: float
    density: DensityCategory
    detector_rows_mm: float
    detector_cols_mm: float
    pectoral_top_mm: float
    pectoral_side_mm: float
    lesions: list[Lesion] = field(default_factory=list)
    gland_volume: np.ndarray | None = None  # coarse 3D fibroglandular field, 2 mm voxels

    def view_geometry(self, view: str) -> ViewGeometry:
        if view == "CC":
            spread = (2 * self.half_height_mm / self.cc_thickness_mm) ** 0.15
            return ViewGeometry(
                "CC",
                e_x=np.array([1.0, 0.0, 0.0]),
                e_y=np.array([0.0, -1.0, 0.0]),
                d=np.array([0.0, 0.0, 1.0]),
                centre_row_mm=self.detector_rows_mm / 2,
                half_height_mm=self.half_width_mm * spread,
                model_half_extent_mm=self.half_width_mm,
                compressed_thickness_mm=self.cc_thickness_mm,
            )
        theta = np.deg2rad(MLO_ANGLE_DEG)
        up = np.array([0.0, np.sin(theta), np.cos(theta)])  # superolateral
        extent = float(
            np.hypot(self.half_width_mm * np.sin(theta), self.half_height_mm * np.cos(theta))
        )
        spread = (2 * extent / self.mlo_thickness_mm) ** 0.15
        half = extent * spread
        return ViewGeometry(
            "MLO",
            e_x=np.array([1.0, 0.0, 0.0]),
            e_y=-up,
            d=np.cross(np.array([1.0, 0.0, 0.0]), up),
            centre_row_mm=min(self.detector_rows_mm - half - 8.0, self.detector_rows_mm * 0.58),
            half_height_mm=half,
            model_half_extent_mm=extent,
            compressed_thickness_mm=self.mlo_thickness_mm,
        )


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def sample_breast(
    rng: np.random.Generator, laterality: str, density: DensityCategory
) -> BreastModel:
    """A plausible compressed breast that fits a 18x24 or 24x30 cm detector."""
    depth = float(rng.uniform(65, 125))
    half_width = float(rng.uniform(55, 105))
    half_height = half_width * float(rng.uniform(0.85, 1.1))
    cc_t = float(rng.uniform(35, 70))
    large = half_width > 78 or depth > 100
    rows_mm, cols_mm = (300.0, 240.0) if large else (240.0, 180.0)
    # keep the CC outline on the detector
    half_width = min(half_width, (rows_mm / 2 - 14) / 1.2)
    return BreastModel(
        laterality=laterality,
        depth_mm=depth,
        half_width_mm=half_width,
        half_height_mm=half_height,
        cc_thickness_mm=cc_t,
        mlo_thickness_mm=cc_t + float(rng.uniform(0, 8)),
        density=density,
        detector_rows_mm=rows_mm,
        detector_cols_mm=cols_mm,
        pectoral_top_mm=float(rng.uniform(0.3, 0.55)) * depth,
        pectoral_side_mm=float(rng.uniform(0.5, 0.9)) * rows_mm * 0.55,
    )


def sample_lesion(
    rng: np.random.Generator,
    breast: BreastModel,
    lesion_id: str,
    lesion_type: LesionType,
    one_view_probability: float = 0.15,
) -> Lesion:
    """A mass (4-30 mm) or calcification cluster placed inside the breast, away from the skin."""
    while True:
        u = rng.uniform(-1, 1, size=3)
        u[0] = abs(u[0])
        if 0.15 <= u[0] and np.linalg.norm(u) <= 0.78:
            break
    centre = u * np.array([breast.depth_mm, breast.half_width_mm, breast.half_height_mm])
    visible: tuple[str, ...] = ("CC", "MLO")
    if rng.random() < one_view_probability:
        visible = (str(rng.choice(["CC", "MLO"])),)
    if lesion_type is LesionType.CALCIFICATION_CLUSTER:
        radius = float(rng.uniform(2.5, 7.0))
        n = int(rng.integers(6, 21))
        specks = []
        for _ in range(n):
            offset = rng.normal(size=3)
            offset *= radius * rng.uniform(0.1, 1.0) ** (1 / 3) / np.linalg.norm(offset)
            specks.append((offset, float(rng.uniform(0.08, 0.3))))
        return Lesion(
            lesion_id, lesion_type, centre, 2 * radius, None, specks=tuple(specks),
            visible_in=visible, contrast=float(rng.uniform(0.8, 1.3)),
        )

    diameter = float(np.exp(rng.uniform(np.log(4.0), np.log(30.0))))
    shape = MassShape(str(rng.choice([s.value for s in MassShape], p=[0.2, 0.3, 0.3, 0.2])))
    r = diameter / 2
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    spicules: list[tuple[np.ndarray, np.ndarray, float]] = []
    if shape is MassShape.ROUND:
        parts.append((np.zeros(3), np.full(3, r), np.eye(3)))
    elif shape is MassShape.OVAL:
        axes = r * np.array([1.0, rng.uniform(0.55, 0.8), rng.uniform(0.6, 0.9)])
        parts.append((np.zeros(3), axes, _rotation(rng)))
    else:
        core = 0.75 if shape is MassShape.SPICULATED else 0.7
        parts.append((np.zeros(3), np.full(3, r * core), np.eye(3)))
        for _ in range(int(rng.integers(3, 7)) if shape is MassShape.IRREGULAR else 2):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            sub = r * rng.uniform(0.35, 0.6)
            parts.append(
                (direction * (r - sub) * rng.uniform(0.6, 1.0),
                 sub * np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)]),
                 _rotation(rng))
            )
        if shape is MassShape.SPICULATED:
            for _ in range(int(rng.integers(10, 22))):
                direction = rng.normal(size=3)
                direction /= np.linalg.norm(direction)
                start = direction * r * 0.5
                end = direction * r * rng.uniform(1.4, 2.2)
                spicules.append((start, end, float(rng.uniform(0.25, 0.5))))
    return Lesion(
        lesion_id, LesionType.MASS, centre, diameter, shape, parts=tuple(parts),
        spicules=tuple(spicules), visible_in=visible, contrast=float(rng.uniform(0.7, 1.3)),
    )


def lesion_position(breast: BreastModel, lesion: Lesion) -> dict[str, float | int]:
    """Where ``lesion``'s centre is, as truth records it (truth schema 1.2): the breast-frame
    coordinates, the distance from the nipple at (depth, 0, 0), the depth behind the nipple as a
    fraction of the breast's depth, and the clock-face hour seen facing the patient (12
    superior; the right breast's lateral side at 9 o'clock, the left breast's at 3)."""
    x, y, z = (float(c) for c in lesion.centre)
    behind = breast.depth_mm - x
    # facing the patient, the viewer's right is the patient's left: the left breast's lateral side
    toward_viewer_right = y if breast.laterality == "L" else -y
    degrees = float(np.degrees(np.arctan2(toward_viewer_right, z))) % 360.0
    hour = int(round(degrees / 30.0)) % 12 or 12
    return {"chest_wall_mm": round(x, 2), "lateral_mm": round(y, 2), "superior_mm": round(z, 2),
            "nipple_distance_mm": round(float(np.sqrt(behind**2 + y**2 + z**2)), 2),
            "depth_fraction": round(behind / breast.depth_mm, 4), "clock": hour}
