"""Overlay PNGs a person looks at: the image as displayed, breast outline, landmarks and boxes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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

    boxes = [tuple(float(v) * scale for v in mark.box) for mark in marks]
    placed: list[tuple[float, float, float, float]] = []
    for mark, box in zip(marks, boxes):  # every box first: labels go on top of all of them
        draw.rectangle(box, outline=mark.color, width=line_w)
    for mark, (x0, y0, _, y1) in zip(marks, boxes):
        # a mark near the right edge keeps its whole label on the canvas: moved left, not clipped
        text_x = max(0.0, min(x0, size[0] - draw.textlength(mark.label, font=font) - 2))
        # above the box, else below it, else further down: never over an earlier (higher-scoring)
        # mark's label
        step = font.size + 4
        text_y = y0 - step if y0 > step + 2 else y1 + 4  # where it goes when every place is taken
        tries = [y0 - step] + [y1 + 4 + k * step for k in range(len(marks) + 1)]
        for y in (y for y in tries if 0 <= y <= size[1] - step):
            if not any(_overlap(draw.textbbox((text_x, y), mark.label, font=font), other) for other in placed):
                text_y = y
                break
        bbox = draw.textbbox((text_x, text_y), mark.label, font=font)
        placed.append(bbox)
        draw.rectangle(bbox, fill=(0, 0, 0))
        draw.text((text_x, text_y), mark.label, fill=mark.color, font=font)

    heading = title or f"{image.laterality.value} {image.view.value}"
    bbox = draw.textbbox((8, 8), heading, font=font)
    draw.rectangle((bbox[0] - 4, bbox[1] - 4, bbox[2] + 4, bbox[3] + 4), fill=(0, 0, 0))
    draw.text((8, 8), heading, fill=(255, 255, 255), font=font)
    if status is not None:
        text, warning = status
        top = bbox[3] + 10
        line = draw.textbbox((8, top), text, font=font)
        draw.rectangle((line[0] - 4, line[1] - 4, line[2] + 4, line[3] + 4), fill=(160, 0, 0) if warning else (0, 0, 0))
        draw.text((8, top), text, fill=(255, 255, 255), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether two (x0, y0, x1, y1) rectangles share any area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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
        raise ValueError(f"{path}: not a truth file with exams/lesions/views ({type(exc).__name__}: {exc})") from None
    return marks
