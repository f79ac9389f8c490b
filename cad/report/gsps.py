"""Grayscale Softcopy Presentation State (GSPS) that shows the CAD marks on any DICOM viewer.

One GSPS per study, built with :mod:`highdicom.pr`, references every analysed image and carries
the CAD marks at or above the operating point on one graphic layer: each mark is a closed
POLYLINE through the corners of its finding box in PIXEL units (0.0\\0.0 is the top-left corner
of the top-left pixel, the convention of the boxes in findings.json) with a short text label.

A presentation state replaces the image's own grayscale pipeline, Photometric Interpretation
included (PS3.4 N.2.1.4). So that each image looks as its creator intended, the GSPS carries:

* the images' rescale (the Modality LUT of MG images, DX Image module), copied by highdicom,
* per image, its own first VOI LUT or else its first window (the order ingest uses), or a
  window over the stored value range when the image has neither,
* Presentation LUT Shape INVERSE for MONOCHROME1 images and IDENTITY for MONOCHROME2.

Limits of one GSPS: the referenced images must share Rows and Columns (highdicom writes one
Displayed Area item), rescale and Photometric Interpretation (one Modality LUT and one
Presentation LUT per GSPS); otherwise a ValueError names the attribute. General Series
Laterality is the breast when all images show one, else empty (dciodvfy warns about that).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from highdicom import (
    VOILUT,
    PresentationLUTTransformation,
    ReferencedImageSequence,
)
from highdicom.color import CIELabColor
from highdicom.enum import PresentationLUTShapeValues
from highdicom.pr import (
    AnnotationUnitsValues,
    GraphicAnnotation,
    GraphicGroup,
    GraphicLayer,
    GraphicObject,
    GraphicTypeValues,
    GrayscaleSoftcopyPresentationState,
    SoftcopyVOILUTTransformation,
    TextJustificationValues,
    TextObject,
)
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian

from cad.report.equipment import DEVICE, PR_SERIES_NUMBER
from cad.result.model import BOX_DIGITS, Finding, FindingView, StudyResult, shown_score

CONTENT_LABEL = "CAD_MARKS"
LAYER_NAME = "CAD_MARKS"
LAYER_DESCRIPTION = "CAD marks at or above the operating point"
SERIES_DESCRIPTION = "CAD marks"
INSTANCE_NUMBER = 1
#: Recommended layer colour on colour displays, and white on grayscale (mammography) displays.
MARK_COLOR = CIELabColor.from_string("yellow")
MARK_GRAY = 0xFFFF
#: Label height as a fraction of the image height, and the width of a character per unit height
#: used to size the label's bounding box (the viewer chooses the font that fits the box).
TEXT_HEIGHT_FRACTION = 1 / 60
CHAR_WIDTH_RATIO = 0.6
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
STORED_RANGE_EXPLANATION = "stored value range (image has no VOI)"


def build_presentation_state(
    findings: StudyResult,
    headers: Sequence[Dataset],
    uids: dict[str, str],
    instance_number: int = INSTANCE_NUMBER,
    result_number: int = 1,
) -> GrayscaleSoftcopyPresentationState:
    """GSPS of one study: its analysed images, their VOI and the CAD marks readers see.

    Parameters
    ----------
    findings: cad.result.model.StudyResult
        Result of the study; findings scoring at or above ``operating_threshold`` are drawn,
        on every image (view) of the finding.
    headers: Sequence[pydicom.Dataset]
        Pixel-free datasets of the analysed images (``MammogramImage.header``).
    uids: dict[str, str]
        ``cad.io.uids.output_uids`` of the study; ``"pr_series"`` and ``"pr_instance"`` are used.
    instance_number: int, optional
        Instance Number, when a study needs more than one presentation state (one per image size).
    result_number: int, optional
        Which result of the study this is (the service counts them): 1 is labelled CAD_MARKS,
        a later one CAD_MARKS_V<n> with a description saying it replaces the earlier marks.

    Returns
    -------
    highdicom.pr.GrayscaleSoftcopyPresentationState
        The presentation state. With no marks it still references the images with their VOI.
        Content is determined by the inputs except for the creation dates and times that
        highdicom sets to now (Instance and Presentation Creation Date/Time, Contribution
        DateTime of its Contributing Equipment item).

    Raises
    ------
    ValueError
        When there is no image, a UID is missing, the images are not of the findings' study,
        repeat a SOPInstanceUID, differ in Rows/Columns, rescale (raised by highdicom) or
        MONOCHROME1/2, carry a Modality LUT Sequence, or a mark lies outside its image. Marks on
        images not given belong to another presentation state of the study and are skipped.

    """
    if not headers:
        raise ValueError('Argument "headers" must contain at least one analysed image.')
    for key in ("pr_series", "pr_instance"):
        if not uids.get(key):
            raise ValueError(f'Argument "uids" has no "{key}".')
    images = sorted(headers, key=lambda h: str(h.SOPInstanceUID))
    by_uid = {str(h.SOPInstanceUID): h for h in images}
    if len(by_uid) != len(images):
        raise ValueError("SOPInstanceUID: an image is given more than once.")
    if {str(h.StudyInstanceUID) for h in images} != {findings.study_instance_uid}:
        raise ValueError("StudyInstanceUID: the images are not all of the findings' study.")
    if len({(int(h.Rows), int(h.Columns)) for h in images}) != 1:
        raise ValueError("Rows/Columns: one presentation state needs images of one size.")
    photometric = {str(h.PhotometricInterpretation).strip() for h in images}
    if len(photometric) != 1 or not photometric <= set(MONOCHROME):
        raise ValueError(
            f"PhotometricInterpretation: {sorted(photometric)}; one presentation state needs "
            "all images MONOCHROME1 or all MONOCHROME2."
        )
    inverse = photometric == {"MONOCHROME1"}
    if any("ModalityLUTSequence" in h for h in images):
        # MG images rescale (DX Image module); highdicom copies only rescale attributes
        raise ValueError("ModalityLUTSequence: not supported (MG images use rescale).")

    shown = findings.marks
    layer = GraphicLayer(LAYER_NAME, order=1, description=LAYER_DESCRIPTION, display_color=MARK_COLOR)
    layer.GraphicLayerRecommendedDisplayGrayscaleValue = MARK_GRAY  # not a highdicom argument
    groups = [GraphicGroup(n, f.finding_id, _group_description(f)) for n, f in enumerate(shown, 1)]
    annotations = _annotations(shown, groups, by_uid, layer)
    pr = GrayscaleSoftcopyPresentationState(
        referenced_images=images,
        series_instance_uid=uids["pr_series"],
        series_number=PR_SERIES_NUMBER,
        sop_instance_uid=uids["pr_instance"],
        instance_number=instance_number,
        manufacturer=DEVICE.manufacturer,
        manufacturer_model_name=DEVICE.model_name,
        software_versions=DEVICE.software_versions,
        device_serial_number=DEVICE.device_serial_number,
        content_label=content_label(result_number),
        content_description=_description(findings, result_number),
        graphic_annotations=annotations or None,
        graphic_layers=[layer] if annotations else None,
        graphic_groups=groups or None,
        content_creator_name=None,
        voi_lut_transformations=_voi_transformations(images),
        presentation_lut_transformation=PresentationLUTTransformation(
            PresentationLUTShapeValues.INVERSE if inverse else PresentationLUTShapeValues.IDENTITY
        ),
        series_description=SERIES_DESCRIPTION,
    )
    # General Series Laterality (Type 2C, breasts are paired): the side when all images show
    # one breast, else empty (no single value describes a two-breast series)
    sides = {str(h.get("ImageLaterality") or h.get("Laterality") or "") for h in images}
    pr.Laterality = sides.pop() if len(sides) == 1 and sides <= {"L", "R"} else ""
    return pr


def content_label(result_number: int = 1) -> str:
    """The Content Label of a study's presentation states: CAD_MARKS for its first result,
    CAD_MARKS_V<n> for the n-th (a later result supersedes the earlier ones, RC-034)."""
    if result_number < 1:
        raise ValueError(f"result number {result_number}: counts from 1")
    return CONTENT_LABEL if result_number == 1 else f"{CONTENT_LABEL}_V{result_number}"


def _description(findings: StudyResult, result_number: int) -> str:
    """Content Description (LO, at most 64 characters): the algorithm and operating point, and
    for a later result that it replaces the earlier CAD marks of the study."""
    algorithm = findings.algorithm
    if result_number == 1:
        return f"{algorithm.name} {algorithm.version}, operating point {shown_score(findings.operating_threshold)}"[:64]
    return f"Result {result_number}, replaces earlier CAD marks; {algorithm.name} {algorithm.version}"[:64]


def _label(finding: Finding, view: FindingView) -> str:
    """Text shown beside a mark: finding id, score and, when linked, the other view."""
    others = [v.view.value for v in finding.views if v.sop_instance_uid != view.sop_instance_uid]
    return f"{finding.finding_id} {shown_score(finding.score)}" + (f" + {others[0]}" if others else "")


def _box(view: FindingView) -> tuple[float, float, float, float]:
    """Corners of a finding box exactly as findings.json writes them."""
    x0, y0, x1, y1 = (round(float(c), BOX_DIGITS) for c in view.box)
    return x0, y0, x1, y1


def _group_description(finding: Finding) -> str:
    views = "/".join(v.view.value for v in finding.views)
    return f"{finding.laterality.value} {finding.type.value}, score {shown_score(finding.score)}, {views}"


def _annotations(
    shown: Sequence[Finding],
    groups: Sequence[GraphicGroup],
    by_uid: dict[str, Dataset],
    layer: GraphicLayer,
) -> list[GraphicAnnotation]:
    """One annotation per image that carries marks, in SOP Instance UID order."""
    objects: dict[str, tuple[list[GraphicObject], list[TextObject]]] = {}
    for finding, group in zip(shown, groups):
        for view in finding.views:
            image = by_uid.get(view.sop_instance_uid)
            if image is None:
                # a view in another presentation state of the study (another image size)
                continue
            rows, cols = int(image.Rows), int(image.Columns)
            x0, y0, x1, y1 = _box(view)
            if not (0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows):
                raise ValueError(
                    f"box of {finding.finding_id} lies outside its image of {cols} x {rows}."
                )
            outline = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
            label = _label(finding, view)
            graphics, texts = objects.setdefault(view.sop_instance_uid, ([], []))
            graphics.append(GraphicObject(GraphicTypeValues.POLYLINE, outline,
                                          AnnotationUnitsValues.PIXEL, graphic_group=group))
            texts.append(TextObject(label, AnnotationUnitsValues.PIXEL,
                                    bounding_box=_text_box((x0, y0, x1, y1), label, rows, cols),
                                    text_justification=TextJustificationValues.LEFT,
                                    graphic_group=group))
    return [
        GraphicAnnotation([by_uid[uid]], layer, graphic_objects=graphics, text_objects=texts)
        for uid, (graphics, texts) in sorted(objects.items())
    ]


def _text_box(
    box: tuple[float, float, float, float], text: str, rows: int, cols: int
) -> tuple[float, float, float, float]:
    """Label bounding box in whole pixels inside the image: above the mark, else below, else
    at its top edge; left-aligned with the mark as far as the image allows."""
    height = max(1, round(rows * TEXT_HEIGHT_FRACTION))
    width = round(len(text) * CHAR_WIDTH_RATIO * height)
    if width > cols:
        width, height = cols, max(1, int(cols / (len(text) * CHAR_WIDTH_RATIO)))
    height = min(height, rows)
    x0, y0, _, y1 = box
    gap = max(1, height // 4)
    if y0 - gap - height >= 0:
        top = int(y0) - gap - height
    elif y1 + gap + height <= rows:
        top = math.ceil(y1) + gap
    else:
        top = min(int(y0), rows - height)
    left = min(max(0, int(x0)), cols - width)
    return float(left), float(top), float(left + width), float(top + height)


@dataclass(frozen=True)
class _Lut:
    """A VOI LUT as the GSPS carries it: 16-bit entries (uint16 bytes), rescaled from the
    image's depth so that the display is unchanged (a presentation state allows 8 or 16 bits
    per entry; MG images may use 10 to 16)."""

    first_mapped: int
    entries: bytes
    explanation: str | None


@dataclass(frozen=True)
class _Window:
    center: float
    width: float
    function: str | None
    explanation: str | None


def _lut_of(item: Dataset, header: Dataset) -> _Lut:
    """Read a VOI LUT item; OW data is in the byte order of the file the header came from."""
    count, first, bits = (int(v) for v in item.LUTDescriptor)
    data = item.LUTData
    if isinstance(data, bytes):
        meta = getattr(header, "file_meta", None)
        big = meta is not None and meta.get("TransferSyntaxUID") == ExplicitVRBigEndian
        entries = np.frombuffer(data, dtype=">u2" if big else "<u2", count=count or 2**16)
    else:
        entries = np.atleast_1d(np.asarray(data))
    entries_16 = np.rint(entries * (0xFFFF / (2**bits - 1))).astype(np.uint16)
    explanation = item.get("LUTExplanation")
    return _Lut(first, entries_16.tobytes(), None if explanation is None else str(explanation))


def _first(value: Any) -> Any:
    """First value of a possibly multi-valued attribute."""
    return value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value


def _voi_of(h: Dataset) -> _Lut | _Window:
    """How one image's VOI stage displays it: its first VOI LUT, else its first window (the
    order ingest uses), else a window over the stored value range."""
    if h.get("VOILUTSequence"):
        return _lut_of(h.VOILUTSequence[0], h)
    if "WindowCenter" in h and "WindowWidth" in h:
        explanation = h.get("WindowCenterWidthExplanation")
        return _Window(float(_first(h.WindowCenter)), float(_first(h.WindowWidth)),
                       str(h.VOILUTFunction) if "VOILUTFunction" in h else None,
                       None if explanation is None else str(_first(explanation)))
    bits = int(h.BitsStored)
    signed = int(h.PixelRepresentation) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if "RescaleSlope" in h and "RescaleIntercept" in h:
        slope, intercept = float(h.RescaleSlope), float(h.RescaleIntercept)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    # LINEAR window whose first and last output steps fall on low and high (PS3.3 C.11.2.1.2.1)
    return _Window((low + high + 1) / 2, float(high - low + 1), None, STORED_RANGE_EXPLANATION)


def _voi_transformations(images: Sequence[Dataset]) -> list[SoftcopyVOILUTTransformation]:
    """One Softcopy VOI LUT item per distinct VOI, referencing its images unless all share it."""
    grouped: dict[_Lut | _Window, list[Dataset]] = {}
    for h in images:
        grouped.setdefault(_voi_of(h), []).append(h)
    out = []
    for voi, members in grouped.items():
        refs = None if len(grouped) == 1 else ReferencedImageSequence(members)
        if isinstance(voi, _Lut):
            entries = np.frombuffer(voi.entries, dtype=np.uint16)
            lut = VOILUT(voi.first_mapped, entries, voi.explanation)
            out.append(SoftcopyVOILUTTransformation(voi_luts=[lut], referenced_images=refs))
        else:
            # one-element lists: highdicom splits a lone explanation string into characters
            out.append(SoftcopyVOILUTTransformation(
                window_center=[voi.center], window_width=[voi.width],
                window_explanation=None if voi.explanation is None else [voi.explanation],
                voi_lut_function=voi.function, referenced_images=refs,
            ))
    return out
