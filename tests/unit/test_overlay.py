"""Overlay rendering details a reader depends on (SRS-OUT-003)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from cad.io.image import Laterality, MammogramImage, PixelSpacing, View
from cad.report.overlay_drawing import Mark, render_overlay

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

    alone, together = first_label(marks[:1], "alone.png"), label_pixels(marks, tmp_path / "together.png", first)
    assert alone.sum() > 50  # the label is where the test looks
    # wherever it went to leave the second box free, the first label shows whole
    assert together >= 0.95 * label_pixels(marks[:1], tmp_path / "alone-count.png", first), "the first mark's label is covered"


def label_pixels(drawn: list[Mark], png: Path, colour: tuple[int, int, int]) -> int:
    """Pixels of ``colour`` outside every box outline: what shows of that mark's label."""
    height, width = 600, 400
    image = _flat_image(png.parent, height, width)
    rgb = np.asarray(Image.open(render_overlay(image, None, drawn, png)).convert("RGB")).astype(int)
    shown = np.abs(rgb - colour).sum(axis=2) < 30
    for mark in drawn:
        box = tuple(int(v) for v in mark.box)
        outline = _outline(box, max(2, height // 400))  # type: ignore[arg-type]
        shown[: outline.shape[0], : outline.shape[1]] &= ~outline
    return int(shown.sum())


def _outline(box: tuple[int, int, int, int], width: int) -> np.ndarray:
    """Rows and columns of a box's outline as drawn (``width`` pixels inwards)."""
    x0, y0, x1, y1 = box
    mask = np.zeros((y1 + 1, x1 + 1), bool)
    mask[y0:y1 + 1, x0:x1 + 1] = True
    mask[y0 + width:y1 + 1 - width, x0 + width:x1 + 1 - width] = False
    return mask


@pytest.mark.req("SRS-OUT-008")
def test_a_label_never_covers_another_marks_box(tmp_path: Path) -> None:
    """Crowded marks: every box's outline stays visible whole; labels find room around them."""
    height, width = 600, 400
    image = _flat_image(tmp_path, height, width)
    colours = [(0, 210, 255), (255, 150, 0), (255, 0, 200), (0, 255, 80)]
    boxes = [(150, 300, 190, 340), (150, 262, 190, 296), (196, 300, 236, 340), (150, 346, 190, 380)]
    marks = [Mark(b, f"F00{n + 1} 0.{50 - n}1 (this view only)", c) for n, (b, c) in enumerate(zip(boxes, colours))]
    rgb = np.asarray(Image.open(render_overlay(image, None, marks, tmp_path / "o.png")).convert("RGB")).astype(int)
    line = max(2, height // 400)
    for box, colour in zip(boxes, colours):
        outline = _outline(box, line)
        pixels = rgb[: outline.shape[0], : outline.shape[1]][outline]
        others = np.zeros(outline.shape, bool)
        for other in boxes:
            if other != box:
                drawn = _outline(other, line)
                others[: drawn.shape[0], : drawn.shape[1]] |= drawn[: outline.shape[0], : outline.shape[1]]
        mine = pixels[~others[outline]]
        assert (np.abs(mine - colour).sum(axis=1) < 30).all(), f"a label covers part of box {box}"


@pytest.mark.req("SRS-OUT-008")
def test_a_label_is_never_hidden_under_the_banner(tmp_path: Path) -> None:
    """A mark where the title and the status line would be: its label shows whole all the same
    (the banner, drawn last, would hide whatever lies under it)."""
    colour = (255, 150, 0)
    label = Mark((40, 20, 80, 60), "F001 0.500 (this view only)", colour)  # where the banner is
    title = ("R MLO   CAD marks: 1   (score >= 0.116)", ("Exam complete", False))
    clear = Mark((200, 300, 240, 340), label.label, colour)  # away from every banner
    crowded = [label, Mark((10, 520, 390, 590), "F002 0.400 (this view only)", (0, 255, 80))]  # the bottom too
    for marks in ([label], crowded):
        shown = _label_pixels_with_banner(tmp_path, marks, title, colour)
        alone = _label_pixels_with_banner(tmp_path, [clear], title, colour)
        assert shown >= 0.95 * alone, f"the label is hidden under the banner ({shown} of {alone} pixels)"


def _label_pixels_with_banner(tmp_path: Path, marks: list[Mark], banner: tuple[str, tuple[str, bool]],
                              colour: tuple[int, int, int]) -> int:
    height, width = 600, 400
    png = render_overlay(_flat_image(tmp_path, height, width), None, marks, tmp_path / "b.png", *banner)
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    shown = np.abs(rgb - colour).sum(axis=2) < 30
    for mark in marks:
        outline = _outline(tuple(int(v) for v in mark.box), max(2, height // 400))  # type: ignore[arg-type]
        shown[: outline.shape[0], : outline.shape[1]] &= ~outline
    return int(shown.sum())


@pytest.mark.req("SRS-OUT-008")
def test_scores_and_threshold_show_at_one_precision() -> None:
    """Rounding both to three decimals keeps a mark at or above the threshold it passed."""
    from cad.result.model import shown_score

    threshold = 0.115553
    assert shown_score(threshold) == "0.116"
    for score in (0.115553, 0.1159, 0.11556, 0.999999, 1.0):
        assert float(shown_score(score)) >= float(shown_score(threshold)), score
    assert shown_score(0.1159) == "0.116" and shown_score(0.5) == "0.500"
