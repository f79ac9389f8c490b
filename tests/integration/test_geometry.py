"""Breast geometry on phantoms: mask, orientation, nipple, pectoral line (SRS-GEO-*)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cad.io import load
from cad.io.image import Laterality, MammogramImage, PixelSpacing, View
from cad.preprocess import compute_geometry
from cad_tools.phantom.anatomy import DensityCategory, sample_breast
from cad_tools.phantom.render import gland_volume, render_view

#: working resolutions of the geometry a locked model may set (DetectorConfig.geometry_mm): the
#: default every released model uses, and the coarser one evaluated as a change (docs/change-control.md)
WORKING_RESOLUTIONS = (0.5, 1.0)


@pytest.fixture(scope="module", params=WORKING_RESOLUTIONS, ids=[f"{mm}mm" for mm in WORKING_RESOLUTIONS])
def analysed(request: pytest.FixtureRequest, phantom_dir: Path,
             truth: dict[str, Any]) -> list[tuple[MammogramImage, Any, dict[str, Any]]]:
    by_uid = {i["sop_instance_uid"]: i for e in truth["exams"] for i in e["images"]}
    result = load([phantom_dir])
    return [(im, compute_geometry(im, working_mm=request.param), by_uid[im.sop_instance_uid]) for im in result.images]


def _as_image(stored: np.ndarray, laterality: str, view: str, spacing: float) -> MammogramImage:
    pixels = np.clip(stored.astype(np.float32) / 4095.0, 0, 1)
    return MammogramImage(
        Path(f"{laterality}{view}.dcm"), "1.2", "1.2", "1.2", "1.2", Laterality(laterality),
        View(view), pixels, PixelSpacing(spacing, spacing, "test"), "MONOCHROME2", 12, "1.2",
    )


@pytest.mark.req("SRS-GEO-001")
@pytest.mark.parametrize("working_mm", WORKING_RESOLUTIONS)
@pytest.mark.parametrize(("laterality", "view", "seed"), [("L", "CC", 1), ("R", "MLO", 2), ("R", "CC", 3)])
def test_mask_excludes_label_marker_and_collimation(laterality: str, view: str, seed: int, working_mm: float) -> None:
    spacing = 0.25
    renders = {}
    for extras in (False, True):
        rng = np.random.default_rng(seed)
        breast = sample_breast(rng, laterality, DensityCategory.B)
        breast.gland_volume = gland_volume(breast, rng)
        renders[extras] = render_view(
            breast, view, spacing, rng, label=extras, marker=extras,
            collimation="top" if extras else None,
        )
    plain, marked = renders[False], renders[True]
    added = marked.stored != plain.stored  # label, marker and collimation pixels only
    assert added.sum() > 200
    geometry = compute_geometry(_as_image(marked.stored, laterality, view, spacing), working_mm=working_mm)
    m = geometry.mask
    ys, xs = np.nonzero(added)
    inside = [m.contains(x + 0.5, y + 0.5) for x, y in zip(xs, ys)]
    # markers may sit a millimetre from the skin; allow the mask's own resolution there
    assert np.mean(inside) < 0.01
    full = np.kron(m.mask, np.ones((m.factor, m.factor), bool))[: plain.stored.shape[0], : plain.stored.shape[1]]
    truth = marked.breast_mask
    iou = (full & truth).sum() / (full | truth).sum()
    assert iou >= 0.95


@pytest.mark.req("SRS-GEO-002")
def test_chest_wall_side_and_canonical_flip(analysed: list) -> None:
    for image, geometry, _ in analysed:
        assert geometry.mask.chest_wall_left == (image.laterality is Laterality.LEFT)
        assert geometry.transform.flip_x == (image.laterality is Laterality.RIGHT)
        model_input = geometry.transform.apply(image.pixels)
        # chest wall on the left of the model input: the left column is breast, the right is not
        assert model_input[:, :3].mean() > model_input[:, -3:].mean()
        height, width = model_input.shape
        assert abs(width * 0.4 - (geometry.transform.crop[2] - geometry.transform.crop[0]) * image.spacing.mean_mm) < 0.4


@pytest.mark.req("SRS-GEO-003")
def test_nipple_found_on_contour_within_5mm(analysed: list) -> None:
    for image, geometry, truth_image in analysed:
        tx, ty = truth_image["landmarks"]["nipple"]
        error_mm = np.hypot(geometry.nipple[0] - tx, geometry.nipple[1] - ty) * image.spacing.mean_mm
        assert error_mm <= 5.0, f"{image.laterality.value}{image.view.value}: {error_mm:.1f} mm"
        m = geometry.mask
        r, c = int(geometry.nipple[1] // m.factor), int(geometry.nipple[0] // m.factor)
        r, c = min(r, m.mask.shape[0] - 1), min(c, m.mask.shape[1] - 1)
        assert m.boundary()[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any()


@pytest.mark.req("SRS-GEO-004")
def test_pectoral_line_on_mlo_within_10mm(analysed: list) -> None:
    mlo = [(i, g, t) for i, g, t in analysed if i.view is View.MLO]
    assert mlo
    for image, geometry, truth_image in mlo:
        assert geometry.pectoral_line is not None, geometry.warnings
        found = np.array(geometry.pectoral_line)
        expected = np.array(truth_image["landmarks"]["pectoral_line"])
        error_mm = np.abs(found - expected).max() * image.spacing.mean_mm
        assert error_mm <= 10.0, f"{image.laterality.value} MLO pectoral off by {error_mm:.1f} mm"
    for image, geometry, _ in analysed:
        if image.view is View.CC:
            assert geometry.pectoral_line is None


@pytest.mark.req("SRS-GEO-001")
def test_model_input_uses_the_models_geometry_resolution(phantom_dir: Path) -> None:
    from cad.detect.config import DetectorConfig
    from cad.detect.inputs import prepare_view

    image = load([phantom_dir]).images[0]
    for working_mm in WORKING_RESOLUTIONS:
        view = prepare_view(image, DetectorConfig(geometry_mm=working_mm))
        assert view.geometry.mask.factor == max(1, round(working_mm / image.spacing.mean_mm))
