"""Overlay PNGs a person looks at: the image as displayed, breast outline, landmarks and boxes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cad.errors import UsageError
from cad.io.image import MammogramImage
from cad.preprocess.geometry import BreastGeometry

MAX_HEIGHT = 1200
OUTLINE = (60, 220, 90)
NIPPLE = (255, 70, 70)
PECTORAL = (220, 90, 255)


@dataclass(frozen=True)
class Mark:
    """A box to draw, in original image pixels, with a short label."""

    box: Sequence[float]
    label: str
    color: tuple[int, int, int] = (255, 210, 0)


def overlay_name(laterality: str, view: str, sop_instance_uid: str) -> str:
    """The file name of a view's overlay PNG (`cad detect` and `cad inspect` alike)."""
    return f"{laterality}_{view}_{sop_instance_uid[-12:]}.png"


def render_overlay(
    image: MammogramImage,
    geometry: BreastGeometry | None,
    marks: Sequence[Mark],
    path: Path,
    title: str | None = None,
    status: tuple[str, bool] | None = None,
) -> Path:
    """Write a downscaled RGB PNG of ``image`` with outline, nipple, pectoral line and marks;
    ``status`` is a line under the title (text, and whether it is a warning: drawn in red)."""
    height, width = image.shape
    scale = min(1.0, MAX_HEIGHT / height)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    gray = Image.fromarray(np.clip(image.pixels * 255.0, 0, 255).astype(np.uint8))
    canvas = gray.resize(size, Image.Resampling.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(14, size[1] // 50))
    assert isinstance(font, ImageFont.FreeTypeFont)  # always, when a size is given
    line_w = max(2, size[1] // 400)

    if geometry is not None:
        m = geometry.mask
        boundary = m.boundary()
        ys, xs = np.nonzero(boundary)
        f = m.factor * scale
        for px, py in zip(xs, ys):
            draw.point((px * f, py * f), fill=OUTLINE)
        nx, ny = geometry.nipple[0] * scale, geometry.nipple[1] * scale
        r = max(5, size[1] // 120)
        draw.ellipse((nx - r, ny - r, nx + r, ny + r), outline=NIPPLE, width=line_w)
        if geometry.pectoral_line is not None:
            (ax, ay), (bx, by) = geometry.pectoral_line
            draw.line((ax * scale, ay * scale, bx * scale, by * scale), fill=PECTORAL, width=line_w)

    boxes: list[Rect] = [(float(m.box[0]) * scale, float(m.box[1]) * scale, float(m.box[2]) * scale,
                          float(m.box[3]) * scale) for m in marks]
    header = _header(draw, font, title or f"{image.laterality.value} {image.view.value}", status, boxes, size)
    placed: list[Rect] = []  # each label's rectangle, highest-scoring mark first
    anchors: list[tuple[float, float]] = []
    for n, mark in enumerate(marks):
        others = [b for k, b in enumerate(boxes) if k != n]
        anchors.append(_label_place(draw, font, mark.label, boxes[n], others, placed, header, size))
        placed.append(draw.textbbox(anchors[-1], mark.label, font=font))
    for mark, box, label in zip(marks, boxes, placed):  # a label that had to move away points at its box
        leader = _leader(label, box, font.size // 2)
        if leader is not None:
            draw.line(leader, fill=mark.color, width=max(1, line_w // 2))
    for mark, box in zip(marks, boxes):  # boxes over the leaders, labels over the boxes
        draw.rectangle(box, outline=mark.color, width=line_w)
    for mark, label, anchor in zip(marks, placed, anchors):
        draw.rectangle(label, fill=(0, 0, 0))
        draw.text(anchor, mark.label, fill=mark.color, font=font)
    for (rect, fill), (at, text) in header:  # drawn last, over anything
        draw.rectangle(rect, fill=fill)
        draw.text(at, text, fill=(255, 255, 255), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


Rect = tuple[float, float, float, float]
#: how many label rows away from its box a label may go to find a free place
SEARCH_ROWS = 12
#: a banner line: (its rectangle, its fill), (where its text goes, the text)
Banner = tuple[tuple[Rect, tuple[int, int, int]], tuple[tuple[float, float], str]]


def _header(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont, heading: str, status: tuple[str, bool] | None,
            boxes: Sequence[Rect], size: tuple[int, int]) -> list[Banner]:
    """The banner lines: the title, and the status line under it (red when it is a warning), at
    the top left, or at the bottom left when that hides less of the marks' boxes."""

    def lines_at(top: float) -> list[Banner]:
        bbox = draw.textbbox((8, top), heading, font=font)
        lines: list[Banner] = [(((bbox[0] - 4, bbox[1] - 4, bbox[2] + 4, bbox[3] + 4), (0, 0, 0)), ((8, top), heading))]
        if status is not None:
            text, warning = status
            below = bbox[3] + 10
            line = draw.textbbox((8, below), text, font=font)
            lines.append((((line[0] - 4, line[1] - 4, line[2] + 4, line[3] + 4), (160, 0, 0) if warning else (0, 0, 0)),
                          ((8, below), text)))
        return lines

    def hidden(lines: list[Banner]) -> float:
        return sum(_area(rect, box) for (rect, _), _ in lines for box in boxes)

    top = lines_at(8)
    height = max(rect[3] for (rect, _), _ in top) - 8
    bottom = lines_at(size[1] - height - 8)
    return bottom if hidden(bottom) < hidden(top) else top


def _leader(label: Rect, box: Rect, near: float) -> tuple[float, float, float, float] | None:
    """A line from a label to its box when the label is not beside it (None when it is)."""
    cx = min(max((label[0] + label[2]) / 2, box[0]), box[2])
    cy = min(max((label[1] + label[3]) / 2, box[1]), box[3])
    lx = min(max(cx, label[0]), label[2])
    ly = min(max(cy, label[1]), label[3])
    return (lx, ly, cx, cy) if abs(lx - cx) + abs(ly - cy) > near else None


def _label_place(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont, label: str, box: Rect, others: list[Rect],
                 placed: list[Rect], header: list[Banner], size: tuple[int, int]) -> tuple[float, float]:
    """Where a mark's label goes: beside its box (above, below, left, right, then further down or
    up), on the canvas, covering neither another mark's box, an earlier (higher-scoring) label,
    nor the banner. When every place is taken, the one covering the least of the other boxes and
    labels, and still never the banner."""
    width, step = draw.textlength(label, font=font) + 2, font.size + 4
    x0, y0, x1, y1 = box

    def fit_x(x: float) -> float:
        return max(0.0, min(x, size[0] - width))

    spots = [(fit_x(x0), y0 - step), (fit_x(x0), y1 + 4), (fit_x(x1 - width), y0 - step), (fit_x(x1 - width), y1 + 4),
             (x0 - width - 4, y0), (x1 + 4, y0)]
    for k in range(1, SEARCH_ROWS + 1):  # then further away, row by row, below and above
        spots += [(x, y) for y in (y1 + 4 + k * step, y0 - step - k * step) for x in (fit_x(x0), fit_x(x1 - width))]
    banner = [rect for (rect, _), _ in header]
    best: tuple[float, tuple[float, float]] | None = None
    for x, y in spots:
        if x < 0 or y < 0 or x + width > size[0] or y + step > size[1]:
            continue
        rect = draw.textbbox((x, y), label, font=font)
        if any(_overlap(rect, b) for b in banner):
            continue
        covered = sum(_area(rect, other) for other in [*others, *placed])
        if covered == 0:
            return x, y
        if best is None or covered < best[0]:
            best = (covered, (x, y))
    if best is not None:
        return best[1]
    below_banner = max(r[3] for r in banner) + 2
    return fit_x(x0), max(below_banner, min(y1 + 4, size[1] - step))


def _area(a: Rect, b: Rect) -> float:
    """The area two (x0, y0, x1, y1) rectangles share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _overlap(a: Rect, b: Rect) -> bool:
    """Whether two (x0, y0, x1, y1) rectangles share any area."""
    return _area(a, b) > 0


def reference_marks(path: Path) -> dict[str, list[Mark]]:
    """Reference lesion boxes to draw (``cad inspect --truth``), by SOP Instance UID, from a
    truth file in the phantom/converted-dataset layout (exams -> lesions -> views with boxes).
    Raises ValueError naming the file when it is not in that layout."""
    import json

    marks: dict[str, list[Mark]] = {}
    try:
        data = json.loads(path.read_text())
        for exam in data["exams"]:
            for lesion in exam["lesions"]:
                label = f"{lesion['lesion_id']} {lesion['type'].split('_')[0]}"
                for view in lesion["views"]:
                    marks.setdefault(view["sop_instance_uid"], []).append(Mark(view["box"], label, (255, 210, 0)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a truth file with exams/lesions/views ({type(exc).__name__}: {exc})") from None
    return marks
