"""Render one mammographic view of a :class:`BreastModel` as a For Presentation image.

Physics, simplified but in the right order: attenuation line integrals of fat, fibroglandular
tissue, skin, pectoral muscle and lesions (values near 20 keV), Poisson quantum noise on the
detected photons, detector blur, then the log transform and thickness equalisation a vendor's
display processing applies. Lesion footprints are exact chord lengths of ellipsoids, so a
lesion's projected size and position follow from its 3D placement in each view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from cad.preprocess.mask import block_mean
from cad_tools.phantom.anatomy import BreastModel, Lesion, LesionType, MassShape, ViewGeometry
from cad_tools.phantom.texture import power_law_field

# Linear attenuation coefficients near 20 keV, per mm.
MU_FAT = 0.0456
MU_GLAND = 0.0802
MU_MASS = 0.0850
MU_SKIN = 0.0800
MU_MUSCLE = 0.0790
MU_CALCIFICATION = 1.25
SKIN_MM = 1.5
PHOTONS_PER_MM2 = 90_000.0
GLAND_VOXEL_MM = 2.0
#: a mass counts as covering a pixel where its projected thickness reaches this (mm)
MASS_FOOTPRINT_MM = 1.0


@dataclass
class RenderedView:
    """One view, ready to be written as DICOM, with its ground truth in image pixels."""

    laterality: str
    view: str
    stored: np.ndarray  # uint16, final (display) orientation
    bits_stored: int
    spacing_mm: float
    window_center: float
    window_width: float
    boxes: dict[str, list[int]]  # lesion_id -> [x0, y0, x1, y1], x1/y1 exclusive
    nipple: tuple[float, float]  # (column, row) in pixels
    pectoral_line: tuple[tuple[float, float], tuple[float, float]] | None
    has_label: bool
    breast_mask: np.ndarray  # bool, final orientation: where the breast is
    #: each lesion's exact expected signal in stored values, final orientation, rendered
    #: apart from the anatomy and noise (what the view would lose without the lesion)
    lesion_signals: dict[str, LesionSignal] = field(default_factory=dict)


@dataclass(frozen=True)
class LesionSignal:
    """A lesion's expected contribution to the stored values: ``patch`` placed at (row0, col0).

    The rendering is linear in attenuation up to the Poisson noise and the final rounding, so
    the lesion-free image is ``stored - signal`` (before clipping and rounding); the signal
    is exact in expectation and needs no re-render of a lesion-free twin.
    """

    patch: np.ndarray  # float32, stored-value units
    row0: int
    col0: int

    def full(self, shape: tuple[int, int]) -> np.ndarray:
        """The signal as a full-size float32 image of ``shape`` (zero away from the lesion)."""
        out = np.zeros(shape, dtype=np.float32)
        rows, cols = shape
        r0, c0 = max(self.row0, 0), max(self.col0, 0)
        r1 = min(self.row0 + self.patch.shape[0], rows)
        c1 = min(self.col0 + self.patch.shape[1], cols)
        if r1 > r0 and c1 > c0:
            out[r0:r1, c0:c1] = self.patch[r0 - self.row0:r1 - self.row0, c0 - self.col0:c1 - self.col0]
        return out


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur; wide kernels run on a block-averaged copy (same result to the eye, 10x faster)."""
    factor = int(sigma_px // 3)
    if factor <= 1:
        return ndimage.gaussian_filter(image.astype(np.float32), sigma_px)
    rows, cols = image.shape
    small = block_mean(image, factor)
    small = ndimage.gaussian_filter(small, sigma_px / factor)
    return ndimage.zoom(small, factor, order=1, grid_mode=True, mode="nearest")[:rows, :cols]


def gland_volume(breast: BreastModel, rng: np.random.Generator) -> np.ndarray:
    """Coarse 3D fibroglandular fraction in the breast frame (2 mm voxels, index = x, y, z)."""
    shape = (
        int(np.ceil(breast.depth_mm / GLAND_VOXEL_MM)) + 2,
        int(np.ceil(2 * breast.half_width_mm / GLAND_VOXEL_MM)) + 2,
        int(np.ceil(2 * breast.half_height_mm / GLAND_VOXEL_MM)) + 2,
    )
    field = power_law_field(shape, beta=3.0, rng=rng, f_min=2.0)
    x, y, z = np.meshgrid(
        *(np.arange(n) for n in shape), indexing="ij", sparse=True
    )
    u = x * GLAND_VOXEL_MM / breast.depth_mm
    v = (y * GLAND_VOXEL_MM - breast.half_width_mm) / breast.half_width_mm
    w = (z * GLAND_VOXEL_MM - breast.half_height_mm) / breast.half_height_mm
    radius = np.sqrt(u**2 + v**2 + w**2)
    # glandular tissue sits behind the nipple, spares the skin and the retromammary fat
    envelope = np.clip((0.92 - radius) / 0.25, 0, 1) * np.clip((u - 0.06) / 0.2, 0, 1)
    envelope = envelope * np.exp(-(((u - 0.5) / 0.55) ** 2 + (v / 0.75) ** 2 + (w / 0.75) ** 2))
    target = breast.density.glandular_fraction
    inside = radius <= 1.0
    mean_env = float(envelope[np.broadcast_to(inside, envelope.shape)].mean())
    quantile = float(np.clip(1.0 - target / max(mean_env, 1e-3), 0.02, 0.98))
    level = float(np.quantile(field, quantile))
    fraction = envelope / (1.0 + np.exp(-4.0 * (field - level)))
    return np.clip(fraction / max(mean_env, 1e-3) * min(mean_env, 1.0), 0, 1).astype(np.float32)


def _project_glands(
    breast: BreastModel, geom: ViewGeometry, rows: int, cols: int, spacing: float
) -> np.ndarray:
    """Mean glandular fraction along each ray, computed on a coarse grid and upsampled."""
    assert breast.gland_volume is not None
    step = GLAND_VOXEL_MM
    coarse_r, coarse_c = int(np.ceil(rows * spacing / step)), int(np.ceil(cols * spacing / step))
    X = (np.arange(coarse_c) + 0.5) * step
    Y = (np.arange(coarse_r) + 0.5) * step
    scale = geom.half_height_mm / geom.model_half_extent_mm
    vertical = (geom.centre_row_mm - Y) / scale
    reach = max(breast.half_width_mm, breast.half_height_mm)
    W = np.arange(-reach, reach + step, step)
    up = -geom.e_y
    pts = (
        X[None, :, None, None] * geom.e_x
        + vertical[:, None, None, None] * up
        + W[None, None, :, None] * geom.d
    )  # (rows, cols, depth, 3)
    idx = np.stack(
        [
            pts[..., 0] / step,
            (pts[..., 1] + breast.half_width_mm) / step,
            (pts[..., 2] + breast.half_height_mm) / step,
        ]
    )
    values = ndimage.map_coordinates(breast.gland_volume, idx.reshape(3, -1), order=1, cval=0.0)
    values = values.reshape(pts.shape[:3])
    inside = (
        (pts[..., 0] / breast.depth_mm) ** 2
        + (pts[..., 1] / breast.half_width_mm) ** 2
        + (pts[..., 2] / breast.half_height_mm) ** 2
    ) <= 1.0
    count = inside.sum(axis=2)
    mean = np.where(count > 0, (values * inside).sum(axis=2) / np.maximum(count, 1), 0.0)
    zoom = (rows / coarse_r, cols / coarse_c)
    return np.clip(ndimage.zoom(mean, zoom, order=1, grid_mode=True, mode="nearest"), 0, 1)[
        :rows, :cols
    ].astype(np.float32)


def _outline(
    breast: BreastModel, geom: ViewGeometry, rows: int, cols: int, spacing: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Breast mask in the canonical frame and the nipple tip (X, Y mm)."""
    Y, X = (np.mgrid[0:rows, 0:cols].astype(np.float32) + 0.5) * spacing
    dy = (Y - geom.centre_row_mm) / geom.half_height_mm
    angle = np.arctan2(dy, X / breast.depth_mm)
    # irregular outline, but the nipple stays the most anterior point (nipple in profile)
    wobble = 1.0 + np.sin(angle) ** 2 * (
        0.035 * np.cos(2 * angle + rng.uniform(0, np.pi))
        + 0.02 * np.cos(3 * angle + rng.uniform(0, np.pi))
        - 0.04
    )
    mask = (X / (breast.depth_mm * wobble)) ** 2 + dy**2 <= 1.0
    nipple = (breast.depth_mm, geom.centre_row_mm)
    if geom.name == "MLO":
        # axilla and pectoral muscle reach the top of the image along the chest wall
        # the upper contour runs diagonally from the axilla down to the nipple
        top_width = max(1.4 * breast.pectoral_top_mm, 0.5 * breast.depth_mm)
        y_join = geom.centre_row_mm - 0.35 * geom.half_height_mm
        reach = top_width + (0.85 * breast.depth_mm - top_width) * np.clip(Y / y_join, 0, 1)
        mask |= (Y <= geom.centre_row_mm) & (X <= reach)
    sigma_mm = 7.0 if geom.name == "MLO" else 4.0
    mask = _blur(mask, sigma_mm / spacing) > 0.5
    mask[:, 0] |= mask[:, 1]
    # nipple tip: the outline point farthest from the chest wall on the breast axis row
    row = min(int(nipple[1] / spacing), rows - 1)
    tip_cols = np.flatnonzero(mask[row])
    tip_x = (tip_cols.max() + 1) * spacing if tip_cols.size else nipple[0]
    # nipple in profile: a small bump on the contour
    bump = ((X - tip_x) / 4.0) ** 2 + ((Y - nipple[1]) / 5.0) ** 2 <= 1.0
    mask |= bump
    return mask, (tip_x + 4.0, nipple[1])


def _distance_to_skin(mask: np.ndarray, spacing: float, pad_top: bool) -> np.ndarray:
    """Distance (mm) from each breast pixel to the skin, not to the chest-wall image edge."""
    pad = 64
    padded = np.pad(mask, ((pad if pad_top else 0, 0), (0, 0)), mode="edge")
    padded = np.pad(padded, ((0, 0), (pad, 0)), mode="edge")
    dist = ndimage.distance_transform_edt(padded)
    return dist[(pad if pad_top else 0):, pad:].astype(np.float32) * spacing


def _thickness(distance_mm: np.ndarray, thickness_mm: float) -> np.ndarray:
    """Compressed thickness with a semicircular edge of radius thickness/2."""
    radius = thickness_mm / 2
    d = np.clip(distance_mm, 0, radius)
    return (thickness_mm * np.sqrt(np.clip(1 - (1 - d / radius) ** 2, 0, 1))).astype(np.float32)


def _ellipsoid_chords(
    offsets: np.ndarray, axes: np.ndarray, rotation: np.ndarray, d: np.ndarray
) -> np.ndarray:
    """Chord lengths along ``d`` through an ellipsoid, for lines through ``offsets`` (…, 3)."""
    A = rotation @ np.diag(1.0 / axes**2) @ rotation.T
    a = float(d @ A @ d)
    Ad = A @ d
    b = offsets @ Ad
    c = np.einsum("...i,ij,...j->...", offsets, A, offsets) - 1.0
    disc = b * b - a * c
    return np.where(disc > 0, 2.0 * np.sqrt(np.clip(disc, 0, None)) / a, 0.0)


def _lesion_patch(
    lesion: Lesion, geom: ViewGeometry, spacing: float, centre_px: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(thickness mm or calcium volume density, footprint mask, row0, col0) around the lesion."""
    reach = lesion.diameter_mm * (1.2 if lesion.spicules else 0.75) + 2.0
    half = int(np.ceil(reach / spacing))
    cx, cy = centre_px
    col0, row0 = int(np.floor(cx)) - half, int(np.floor(cy)) - half
    size = 2 * half + 1
    rr, cc = np.mgrid[0:size, 0:size].astype(np.float64)
    dX = (cc + col0 + 0.5 - cx) * spacing
    dY = (rr + row0 + 0.5 - cy) * spacing
    offsets = dX[..., None] * geom.e_x + dY[..., None] * geom.e_y
    if lesion.type is LesionType.CALCIFICATION_CLUSTER:
        patch = np.zeros((size, size))
        for offset, radius in lesion.specks:
            px = cx + float(offset @ geom.e_x) / spacing - col0
            py = cy + float(offset @ geom.e_y) / spacing - row0
            volume = 4.0 / 3.0 * np.pi * radius**3
            r_px = max(radius / spacing, 0.5)
            blob = np.exp(-(((cc + 0.5 - px) ** 2 + (rr + 0.5 - py) ** 2) / (2 * r_px**2)))
            patch += volume * blob / (blob.sum() * spacing**2)
        footprint = patch > 0.05 * patch.max()
        footprint = ndimage.binary_dilation(footprint, iterations=max(1, int(1.0 / spacing)))
        return patch, footprint, row0, col0
    patch = np.zeros((size, size))
    for centre, axes, rotation in lesion.parts:
        patch = np.maximum(patch, _ellipsoid_chords(offsets - centre, axes, rotation, geom.d))
    footprint = patch >= min(MASS_FOOTPRINT_MM, 0.5 * patch.max())
    for start, end, radius in lesion.spicules:
        s2 = np.array([start @ geom.e_x, start @ geom.e_y])
        e2 = np.array([end @ geom.e_x, end @ geom.e_y])
        seg = e2 - s2
        length2 = float(seg @ seg) or 1e-9
        t = np.clip(((dX - s2[0]) * seg[0] + (dY - s2[1]) * seg[1]) / length2, 0, 1)
        dist = np.hypot(dX - (s2[0] + t * seg[0]), dY - (s2[1] + t * seg[1]))
        r_t = radius * (1 - 0.8 * t)
        patch += np.where(dist < r_t, 2 * np.sqrt(np.clip(r_t**2 - dist**2, 0, None)), 0.0)
    if lesion.shape in (MassShape.IRREGULAR, MassShape.SPICULATED):
        patch = ndimage.gaussian_filter(patch, 0.5 / spacing)
    return patch, footprint, row0, col0


def _burn_in(image: np.ndarray, text: str, left: bool, value: int, spacing: float) -> None:
    """Burn a view label into the top corner away from the chest wall, as modalities do."""
    size = max(12, int(round(6.0 / spacing)))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - very old Pillow
        font = ImageFont.load_default()
    canvas = Image.new("L", (size * 5, size * 2), 0)
    ImageDraw.Draw(canvas).text((size // 4, size // 4), text, fill=255, font=font)
    glyphs = np.asarray(canvas) > 127
    top = int(round(10.0 / spacing))
    margin = int(round(12.0 / spacing))
    x0 = margin if left else image.shape[1] - margin - glyphs.shape[1]
    region = image[top : top + glyphs.shape[0], x0 : x0 + glyphs.shape[1]]
    region[glyphs[: region.shape[0], : region.shape[1]]] = value


def render_view(
    breast: BreastModel,
    view: str,
    spacing: float,
    rng: np.random.Generator,
    bits_stored: int = 12,
    label: bool = True,
    marker: bool = False,
    collimation: str | None = None,
) -> RenderedView:
    """Render ``view`` ("CC" or "MLO") of ``breast`` at ``spacing`` mm per pixel."""
    geom = breast.view_geometry(view)
    rows = int(round(breast.detector_rows_mm / spacing))
    cols = int(round(breast.detector_cols_mm / spacing))
    mask, nipple_mm = _outline(breast, geom, rows, cols, spacing, rng)
    dist = _distance_to_skin(mask, spacing, pad_top=(view == "MLO"))
    T = geom.compressed_thickness_mm
    thickness = np.where(mask, _thickness(dist, T), 0.0).astype(np.float32)
    inner = np.where(mask, _thickness(np.clip(dist - SKIN_MM, 0, None), T - 2 * SKIN_MM), 0.0)
    skin = np.clip(thickness - inner, 0, None)

    glands = _project_glands(breast, geom, rows, cols, spacing)
    fine = power_law_field((rows, cols), beta=3.0, rng=rng, f_min=4.0)
    glands = np.clip(glands * (1.0 + 0.35 * fine) + 0.04 * fine * (glands > 0.02), 0, 1)
    glands *= np.clip(dist / 6.0, 0, 1)  # subcutaneous fat under the skin
    tissue = inner * (MU_FAT + (MU_GLAND - MU_FAT) * glands)
    attenuation = tissue + MU_SKIN * skin

    pectoral = None
    if view == "MLO":
        a, b = breast.pectoral_top_mm, breast.pectoral_side_mm
        Y, X = (np.mgrid[0:rows, 0:cols].astype(np.float32) + 0.5) * spacing
        signed = (1.0 - X / a - Y / b) / np.hypot(1 / a, 1 / b)  # mm inside the line
        muscle = np.where(signed > 0, 12.0 + 3.0 * signed, 0.0)  # a sharp fascial edge
        muscle = np.minimum(muscle, 0.8 * thickness)
        muscle = ndimage.gaussian_filter(muscle, 0.6 / spacing)
        attenuation += (MU_MUSCLE - MU_FAT) * muscle * mask
        pectoral = ((a / spacing, 0.0), (0.0, b / spacing))

    boxes: dict[str, list[int]] = {}
    #: each lesion's attenuation increment (row0, col0, patch) before blur and gain
    increments: dict[str, tuple[int, int, np.ndarray]] = {}
    for lesion in breast.lesions:
        if view not in lesion.visible_in:
            continue
        X_mm, Y_mm = geom.project(lesion.centre)
        centre_px = (X_mm / spacing, Y_mm / spacing)
        patch, footprint, r0, c0 = _lesion_patch(lesion, geom, spacing, centre_px, rng)
        rs = slice(max(r0, 0), min(r0 + patch.shape[0], rows))
        cs = slice(max(c0, 0), min(c0 + patch.shape[1], cols))
        sub = (slice(rs.start - r0, rs.stop - r0), slice(cs.start - c0, cs.stop - c0))
        local = patch[sub]
        inside = mask[rs, cs]
        if lesion.type is LesionType.CALCIFICATION_CLUSTER:
            delta = MU_CALCIFICATION * local * lesion.contrast
        else:
            local = np.minimum(local, 0.8 * thickness[rs, cs])
            background_mu = MU_FAT + (MU_GLAND - MU_FAT) * glands[rs, cs]
            delta = (MU_MASS - background_mu + 0.012) * local * lesion.contrast
        attenuation[rs, cs] += delta * inside
        increments[lesion.lesion_id] = (rs.start, cs.start, (delta * inside).astype(np.float32))
        fp = footprint[sub] & inside
        if fp.any():
            ys, xs = np.nonzero(fp)
            boxes[lesion.lesion_id] = [
                int(xs.min() + cs.start), int(ys.min() + rs.start),
                int(xs.max() + cs.start + 1), int(ys.max() + rs.start + 1),
            ]

    photons = PHOTONS_PER_MM2 * spacing**2
    counts = rng.poisson(photons * np.exp(-attenuation)).astype(np.float32)
    detected = -np.log(np.maximum(counts, 0.5) / photons)
    detected = ndimage.gaussian_filter(detected, DETECTOR_BLUR_PX)
    smooth_thickness = _blur(thickness, 3.0 / spacing)
    presentation = detected - 0.8 * MU_FAT * smooth_thickness

    top = (1 << bits_stored) - 1
    breast_values = presentation[mask]
    lo, hi = np.percentile(breast_values, [0.5, 99.7])
    gain = 0.82 * top / max(hi, 1e-6)
    pedestal = 0.03 * top
    stored = np.clip(pedestal + presentation * gain, 0, top)
    # processed images show air as (near) black
    stored[~mask] = np.clip(rng.normal(2.0, 1.5, size=int((~mask).sum())), 0, top)
    window_low = pedestal + lo * gain
    window_high = pedestal + hi * gain
    width = (window_high - window_low) * 1.25
    centre = 0.5 * (window_high + window_low)

    signals = {
        lesion_id: _lesion_signal(r0, c0, patch, gain, rows, cols, breast.laterality == "R")
        for lesion_id, (r0, c0, patch) in increments.items() if lesion_id in boxes
    }
    nipple = (nipple_mm[0] / spacing, nipple_mm[1] / spacing)
    if breast.laterality == "R":
        stored = stored[:, ::-1]
        mask = mask[:, ::-1]
        boxes = {k: [cols - b[2], b[1], cols - b[0], b[3]] for k, b in boxes.items()}
        nipple = (cols - nipple[0], nipple[1])
        if pectoral is not None:
            pectoral = tuple((cols - x, y) for x, y in pectoral)  # type: ignore[assignment]
    stored = np.ascontiguousarray(stored)
    chest_left = breast.laterality == "L"
    if collimation in ("top", "bottom"):
        band = int(round(rng.uniform(3, 8) / spacing))
        if collimation == "top":
            stored[:band] = top
        else:
            stored[-band:] = top
    if marker:
        mx = nipple[0] + (6.0 / spacing) * (1 if chest_left else -1)
        yy, xx = np.ogrid[0:rows, 0:cols]
        stored[(xx - mx) ** 2 + (yy - nipple[1]) ** 2 <= (1.5 / spacing) ** 2] = top
    if label:
        _burn_in(stored, f"{breast.laterality}{view}", left=not chest_left, value=top,
                 spacing=spacing)
    return RenderedView(
        laterality=breast.laterality,
        view=view,
        stored=np.rint(stored).astype(np.uint16),
        bits_stored=bits_stored,
        spacing_mm=spacing,
        window_center=float(round(centre, 1)),
        window_width=float(round(max(width, 2.0), 1)),
        boxes=boxes,
        nipple=nipple,
        pectoral_line=pectoral,
        has_label=label,
        breast_mask=np.ascontiguousarray(mask),
        lesion_signals=signals,
    )


#: the detector blur applied to the log image (pixels), and how far the signal patch is padded
DETECTOR_BLUR_PX = 0.6
_SIGNAL_PAD_PX = 4


def _lesion_signal(
    row0: int, col0: int, increment: np.ndarray, gain: float, rows: int, cols: int, mirror: bool
) -> LesionSignal:
    """A lesion's attenuation increment through the linear part of the rendering chain
    (detector blur, display gain) and the final mirroring: its expected stored-value signal."""
    pad = _SIGNAL_PAD_PX
    padded = np.pad(increment.astype(np.float64), pad)
    signal = (ndimage.gaussian_filter(padded, DETECTOR_BLUR_PX) * gain).astype(np.float32)
    r0, c0 = row0 - pad, col0 - pad
    if mirror:
        signal = np.ascontiguousarray(signal[:, ::-1])
        c0 = cols - (c0 + signal.shape[1])
    return LesionSignal(signal, r0, c0)
