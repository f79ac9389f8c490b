"""Overlay rendering details a reader depends on (SRS-OUT-003)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from cad.io.image import Laterality, MammogramImage, PixelSpacing, View
from cad.report.overlay import Mark, render_overlay

COLOUR = (0, 210, 255)


def _flat_image(folder: Path, height: int, width: int) -> MammogramImage:
    """A uniform grey right MLO image, so that only the drawn marks and labels differ from it."""
    return MammogramImage(folder / "x.dcm", "1.2.3", "1.2", "1.2.3.4", "test", Laterality.RIGHT, View.MLO,
                          np.full((height, width), 0.3, np.float32), PixelSpacing(0.1, 0.1, "test"),
                          "MONOCHROME2", 16, "test")


@pytest.mark.req("SRS-OUT-003")
def test_a_label_near_the_right_edge_is_moved_left_not_clipped(tmp_path: Path) -> None:
    height, width = 600, 400
    image = _flat_image(tmp_path, height, width)
    label = "F002 0.13 (this view only)"
    box = (width - 30, 200, width - 5, 225)  # the label would run past the right edge from x0
    png = render_overlay(image, None, [Mark(box, label, COLOUR)], tmp_path / "o.png")
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    font = ImageFont.load_default(size=max(14, height // 50))
    label_width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(label, font=font)
    assert label_width > 30  # the case under test: the label is wider than the room right of x0
    rows = rgb[200 - font.size - 6 : 200, :]  # the label sits above the box
    columns = np.flatnonzero((np.abs(rows - COLOUR).sum(axis=2) < 30).any(axis=0))
    assert columns.size and columns.max() < width
    assert columns.max() - columns.min() >= 0.85 * label_width, "label clipped at the image edge"


@pytest.mark.req("SRS-OUT-003")
def test_labels_of_adjacent_marks_do_not_cover_each_other(tmp_path: Path) -> None:
    height, width = 600, 400
    image = _flat_image(tmp_path, height, width)
    first, second = (0, 210, 255), (255, 150, 0)
    # the second box sits just above the first, so its label would land on the first's label
    marks = [Mark((100, 300, 140, 340), "F001 1.00 + CC", first), Mark((110, 268, 130, 290), "F005 0.12", second)]
    font = ImageFont.load_default(size=max(14, height // 50))
    label_width = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength("F001 1.00 + CC", font=font))

    def first_label(drawn: list[Mark], name: str) -> np.ndarray:
        rgb = np.asarray(Image.open(render_overlay(image, None, drawn, tmp_path / name)).convert("RGB")).astype(int)
        rows = rgb[300 - font.size - 6 : 300, 100 : 100 + label_width]  # above the first box
        return (np.abs(rows - first).sum(axis=2) < 30) & ~(np.abs(rows - second).sum(axis=2) < 30)

    alone, together = first_label(marks[:1], "alone.png"), first_label(marks, "together.png")
    assert alone.sum() > 50  # the label is where the test looks
    assert np.array_equal(alone, together), "the first mark's label is covered by the second mark"
