"""Breast geometry on the four real 16-bit CC mammograms in tests/data (SRS-GEO-*)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cad.io.image import Laterality, MammogramImage
from cad.preprocess import compute_geometry
from cad_torch.runtime import TorchRuntime

REAL = Path(__file__).resolve().parents[1] / "data" / "real-mammograms"
FILES = sorted(REAL.glob("*.png"))


@pytest.mark.req("SRS-GEO-001", "SRS-GEO-002", "SRS-GEO-003", "SRS-GEO-005")
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_real_mammogram_geometry(path: Path, real_mammograms: dict[str, MammogramImage]) -> None:
    image = real_mammograms[path.stem]
    geometry = compute_geometry(image)
    m = geometry.mask
    stored = np.asarray(Image.open(path))
    # chest wall side: left breast on the left, right breast on the right (file convention)
    assert m.chest_wall_left == (image.laterality is Laterality.LEFT)
    assert m.chest_wall_clear, f"real anatomy must give a clear chest-wall side (edge cover {m.edge_cover})"
    # the burned-in view label ("LCC"/"RCC") is full-scale text in the top rows: outside the mask
    top = stored.shape[0] // 5
    ys, xs = np.nonzero(stored[:top] == 65535)
    assert ys.size > 50, "label not found in the test image"
    assert not any(m.contains(x + 0.5, y + 0.5) for x, y in zip(xs, ys))
    # the mask covers the tissue: nearly all clearly non-zero pixels near the chest wall are inside
    breast_fraction = m.mask.mean()
    assert 0.1 < breast_fraction < 0.7
    # the nipple lies on the breast contour and on the side away from the chest wall
    r, c = int(geometry.nipple[1] // m.factor), int(geometry.nipple[0] // m.factor)
    r, c = min(r, m.mask.shape[0] - 1), min(c, m.mask.shape[1] - 1)
    assert m.boundary()[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any()
    width = stored.shape[1]
    if m.chest_wall_left:
        assert geometry.nipple[0] > 0.25 * width
    else:
        assert geometry.nipple[0] < 0.75 * width
    # model input keeps the chest wall on the left
    model_input = geometry.transform.apply(image.pixels)
    assert model_input[:, :5].mean() > model_input[:, -5:].mean()


@pytest.mark.req("SRS-DET-003")
def test_detections_on_real_mammograms_lie_inside_the_breast(real_mammograms: dict[str, MammogramImage]) -> None:
    from cad.analysis.pipeline import detect_views
    from cad.detect.locked import load_locked_model

    model = load_locked_model()
    images = list(real_mammograms.values())
    analysed, refused = detect_views(model, images, TorchRuntime(model, max_batch=1))
    assert refused == [] and len(analysed) == len(FILES)
    # every view keeps detections down to the score floor, so an empty loop below means a defect
    assert all(len(view.detections.boxes) > 0 for view in analysed)
    for view in analysed:
        mask = view.view_input.geometry.mask
        for box in view.detections.boxes:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            assert mask.contains(cx, cy), f"{view.image.path.name}: mark at ({cx:.0f}, {cy:.0f}) outside the breast"
