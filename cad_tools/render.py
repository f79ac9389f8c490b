"""Draw a Grayscale Softcopy Presentation State over its image to a PNG, as a viewer would.

For checking the written GSPS (tests, and people looking at results): the stored values go
through the presentation state's own pipeline (PS3.4 N.2.1), not the image's: its Modality LUT,
the Softcopy VOI LUT item that applies to the image, and its Presentation LUT Shape, so the
image's Photometric Interpretation plays no part. The graphic annotations of the image
(POLYLINE/INTERPOLATED graphics and text in PIXEL units, what the CAD writes) are then drawn in
the colour their layer recommends, on an RGB copy downscaled to at most MAX_HEIGHT rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from highdicom.color import CIELabColor
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cad.io.dicom_reader import voi_output_range

MAX_HEIGHT = 1200
DEFAULT_COLOR = (255, 255, 0)
#: The parts of the image's Image Pixel module the VOI stage needs for its output range.
PIXEL_KEYWORDS = ("PhotometricInterpretation", "BitsStored", "PixelRepresentation")
MODALITY_KEYWORDS = ("RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence")
VOI_KEYWORDS = ("WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence")
DRAWN_TYPES = ("POLYLINE", "INTERPOLATED")


def render_presentation_state(image_path: Path, pr: Dataset, out_png: Path) -> Path:
    """Write ``out_png``: the image at ``image_path`` displayed and annotated as ``pr`` says.

    Raises
    ------
    ValueError
        When ``pr`` does not reference the image, has no VOI item for it, or uses a feature
        this renderer does not draw (Presentation LUT Sequence, units other than PIXEL).

    """
    ds = pydicom.dcmread(image_path)
    uid = str(ds.SOPInstanceUID)
    referenced = {str(i.ReferencedSOPInstanceUID)
                  for s in pr.ReferencedSeriesSequence for i in s.ReferencedImageSequence}
    if uid not in referenced:
        raise ValueError(f"SOPInstanceUID: the presentation state does not reference {uid}.")
    gray = _display(ds, pr, uid)
    rows, cols = gray.shape
    scale = min(1.0, MAX_HEIGHT / rows)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    canvas = Image.fromarray(np.rint(gray * 255).astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR).convert("RGB")
    _draw(ImageDraw.Draw(canvas), pr, uid, scale)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png)
    return out_png


def _applies(item: Dataset, uid: str) -> bool:
    """True when a GSPS item without Referenced Image Sequence, or with ``uid`` in it, applies."""
    refs = item.get("ReferencedImageSequence")
    return not refs or any(str(r.ReferencedSOPInstanceUID) == uid for r in refs)


def _display(ds: Dataset, pr: Dataset, uid: str) -> np.ndarray:
    """Presentation values in [0, 1] (1 = brightest) of the image under the GSPS pipeline."""
    voi = [item for item in pr.get("SoftcopyVOILUTSequence", []) if _applies(item, uid)]
    if len(voi) != 1:
        raise ValueError(f"SoftcopyVOILUTSequence: {len(voi)} items apply to {uid}, expected 1.")
    if "PresentationLUTSequence" in pr:
        raise ValueError("PresentationLUTSequence: only Presentation LUT Shape is rendered.")
    # one dataset holding the image's pixel description and the GSPS's LUT stages
    stages = Dataset()
    stages.file_meta = pr.file_meta
    for keyword, source in ([(k, ds) for k in PIXEL_KEYWORDS] + [(k, pr) for k in MODALITY_KEYWORDS]
                            + [(k, voi[0]) for k in VOI_KEYWORDS]):
        if keyword in source:
            stages[keyword] = source[keyword]
    values = apply_modality_lut(ds.pixel_array, stages)
    if stages.get("VOILUTSequence") and values.dtype.kind == "f":
        values = np.rint(values).astype(np.int64)  # a LUT is indexed by integers
    values = apply_voi_lut(values, stages, index=0, prefer_lut=True)
    low, high = voi_output_range(stages)
    shown = np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low or 1.0), 0.0, 1.0)
    return 1.0 - shown if pr.get("PresentationLUTShape", "IDENTITY") == "INVERSE" else shown


def _layer_colors(pr: Dataset) -> dict[str, tuple[int, int, int]]:
    """Each layer's recommended colour (CIELab) as RGB, yellow where none is recommended."""
    colors = {}
    for layer in pr.get("GraphicLayerSequence", []):
        lab = layer.get("GraphicLayerRecommendedDisplayCIELabValue")
        rgb = CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb(clip=True) if lab else None
        colors[str(layer.GraphicLayer)] = rgb or DEFAULT_COLOR
    return colors


def _draw(draw: ImageDraw.ImageDraw, pr: Dataset, uid: str, scale: float) -> None:
    """Draw the image's graphics and texts; DICOM PIXEL coordinate c is PIL pixel c * scale - 0.5
    (DICOM 0.0 is a pixel's corner, PIL's integer coordinate its centre)."""
    colors = _layer_colors(pr)
    width = max(2, round(3 * scale))

    def point(x: float, y: float) -> tuple[float, float]:
        return x * scale - 0.5, y * scale - 0.5

    for annotation in pr.get("GraphicAnnotationSequence", []):
        if not _applies(annotation, uid):
            continue
        color = colors.get(str(annotation.GraphicLayer), DEFAULT_COLOR)
        for obj in annotation.get("GraphicObjectSequence", []):
            if obj.GraphicAnnotationUnits != "PIXEL" or obj.GraphicType not in DRAWN_TYPES:
                raise ValueError(f"GraphicType: {obj.GraphicType} in {obj.GraphicAnnotationUnits} "
                                 "units is not rendered.")
            data = [float(v) for v in obj.GraphicData]
            # vertices snapped to the nearest pixel centre: PIL's wide polylines truncate
            # fractional vertices, which put an outline up to 2 px beside the box edge
            vertices = [tuple(round(c) for c in point(x, y)) for x, y in zip(data[::2], data[1::2])]
            draw.line(vertices, fill=color, width=width, joint="curve")
        for text in annotation.get("TextObjectSequence", []):
            if text.get("BoundingBoxAnnotationUnits") != "PIXEL":
                raise ValueError("BoundingBoxAnnotationUnits: only PIXEL text boxes are rendered.")
            left, top = point(*(float(v) for v in text.BoundingBoxTopLeftHandCorner))
            _, bottom = point(*(float(v) for v in text.BoundingBoxBottomRightHandCorner))
            font = ImageFont.load_default(size=max(8, round(bottom - top)))
            draw.text((left, top), str(text.UnformattedTextValue), fill=color, font=font)
