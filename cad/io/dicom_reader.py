"""Read MG DICOM files into :class:`~cad.io.image.MammogramImage` objects.

Pixel handling follows the DICOM grayscale pipeline with pydicom's pure functions: Modality
LUT, then VOI LUT (or window), then MONOCHROME1 inversion, then scaling to [0, 1] over the
VOI output range. Each refusal is an :class:`~cad.io.errors.IngestError` that names the file
and the problem; no message carries a patient identifier.

Policy choices (documented in docs/ingest.md):

* For Processing images are refused: their raw detector values lack the vendor's display
  processing the detector was trained on.
* Lossless and lossy JPEG 2000, JPEG-LS, JPEG Lossless, RLE and the uncompressed syntaxes are
  decoded; lossy-compressed images are analysed with a warning recorded on the image.
* Pixel spacing is PixelSpacing (calibrated to the breast plane) when present, otherwise
  ImagerPixelSpacing (detector plane); the source travels with the value.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from cad.io.codes import (
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    UNSUPPORTED_MODIFIERS,
    VIEW_CODES,
    VIEW_POSITIONS,
)
from cad.io.errors import IngestError, IngestErrorCode
from cad.io.image import (
    SUPPORTED_VIEWS,
    ImageRef,
    Laterality,
    MammogramImage,
    PixelSpacing,
    View,
)
from cad.io.uids import is_valid_uid

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Transfer syntaxes the CAD decodes. Anything else is refused before decoding.
SUPPORTED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEG2000,
        JPEGLSLossless,
        JPEGLSNearLossless,
        JPEGLossless,
        JPEGLosslessSV1,
        RLELossless,
    }
)
LOSSY_TRANSFER_SYNTAXES: frozenset[str] = frozenset({JPEG2000, JPEGLSNearLossless})

#: Decoded-size cap: the largest mammography detectors are about 30 Mpixel.
MAX_PIXELS = 40_000_000
MIN_SIDE = 64
#: Plausible mammography pixel spacing range in mm.
SPACING_RANGE_MM = (0.02, 1.0)

PIXEL_DATA_TAG = 0x7FE00010
#: Memory bound of reading one file: the file itself (uncompressed 16-bit pixels at the pixel
#: cap are 80 MB; the rest is header and encapsulation) and its header (every element but Pixel
#: Data; screening images carry well under 1 MB, vendor private blocks included).
MAX_FILE_BYTES = 128 * 2**20
MAX_HEADER_BYTES = 16 * 2**20


def _fail(path: Path, code: IngestErrorCode, message: str) -> IngestError:
    return IngestError(path, code, message)


#: characters a quoted header value may show: a corrupt length can make a short attribute
#: swallow the elements after it (patient name included), and element headers hold control
#: bytes, so a value is shown only up to its first other character
_SHOWN = re.compile(r"[A-Za-z0-9 ._+\-\\]{0,32}")


def _shown(value: object) -> str:
    """A header value as messages and logs may quote it (see ``_SHOWN``)."""
    text = str(value)
    match = _SHOWN.match(text)
    kept = match.group(0) if match else ""
    return kept if len(kept) == len(text) else kept + "..."


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip().upper()
    return text or None


def read_laterality(ds: Dataset, path: Path) -> tuple[Laterality, list[str]]:
    """Laterality from ImageLaterality, falling back to the series-level Laterality."""
    notes: list[str] = []
    image_lat = _text(ds, "ImageLaterality")
    series_lat = _text(ds, "Laterality")
    valid = {"L", "R"}
    if image_lat in valid:
        if series_lat in valid and series_lat != image_lat:
            raise _fail(
                path,
                IngestErrorCode.CONTRADICTORY_LATERALITY,
                f"contradictory laterality: ImageLaterality is '{_shown(image_lat)}' but "
                f"Laterality is '{_shown(series_lat)}'",
            )
        return Laterality(image_lat), notes
    if image_lat is not None and image_lat not in valid:
        raise _fail(
            path,
            IngestErrorCode.MISSING_LATERALITY,
            f"laterality not usable: ImageLaterality is '{_shown(image_lat)}' (expected 'L' or 'R')",
        )
    if series_lat in valid:
        notes.append("laterality taken from Laterality (0020,0060); ImageLaterality is absent")
        return Laterality(series_lat), notes
    raise _fail(
        path,
        IngestErrorCode.MISSING_LATERALITY,
        "missing laterality: neither ImageLaterality nor Laterality is 'L' or 'R'",
    )


def _code_key(item: Dataset) -> tuple[str, str]:
    return (
        str(item.get("CodingSchemeDesignator", "")).strip().upper(),
        str(item.get("CodeValue", "")).strip(),
    )


def _view_from_code(item: Dataset) -> View | None:
    view = VIEW_CODES.get(_code_key(item))
    if view is not None:
        return view
    meaning = str(item.get("CodeMeaning", "")).strip().lower().replace("-", "").replace(" ", "")
    by_meaning = {
        "craniocaudal": View.CC,
        "mediolateraloblique": View.MLO,
        "mediolateral": View.ML,
        "lateromedial": View.LM,
    }
    return by_meaning.get(meaning)


def _modifiers(ds: Dataset, view_item: Dataset | None) -> list[str]:
    found: list[str] = []
    items: list[Dataset] = []
    if view_item is not None:
        items.extend(view_item.get("ViewModifierCodeSequence", []))
    items.extend(ds.get("ViewModifierCodeSequence", []))
    for item in items:
        name = UNSUPPORTED_MODIFIERS.get(_code_key(item))
        if name is None:
            meaning = str(item.get("CodeMeaning", "")).lower()
            for word, label in (("spot", "spot compression"), ("magnif", "magnification")):
                if word in meaning:
                    name = label
        if name is not None and name not in found:
            found.append(name)
    return found


def read_view(ds: Dataset, path: Path) -> tuple[View, list[str]]:
    """View from ViewCodeSequence, falling back to ViewPosition; disagreement is an error."""
    notes: list[str] = []
    code_view: View | None = None
    view_item: Dataset | None = None
    seq = ds.get("ViewCodeSequence")
    if seq:
        view_item = seq[0]
        code_view = _view_from_code(view_item)
        if code_view is None:
            scheme, value = _code_key(view_item)
            notes.append(f"ViewCodeSequence code ({_shown(value)}, {_shown(scheme)}) is not a known view")
    position = _text(ds, "ViewPosition")
    position_view = VIEW_POSITIONS.get(position) if position else None
    if position and position_view is None:
        notes.append(f"ViewPosition '{_shown(position)}' is not a known mammography view")

    if code_view is not None and position_view is not None and code_view is not position_view:
        raise _fail(
            path,
            IngestErrorCode.CONTRADICTORY_VIEW,
            f"contradictory view: ViewCodeSequence says {code_view.value} but ViewPosition "
            f"says {position_view.value}",
        )
    view = code_view or position_view
    if view is None:
        detail = "; ".join(notes) if notes else "neither ViewCodeSequence nor ViewPosition is set"
        raise _fail(path, IngestErrorCode.MISSING_VIEW, f"missing view: {detail}")
    if code_view is None:
        notes.append("view taken from ViewPosition; ViewCodeSequence is absent or unknown")

    modifiers = _modifiers(ds, view_item)
    if modifiers:
        raise _fail(
            path,
            IngestErrorCode.UNSUPPORTED_VIEW,
            f"unsupported view: {view.value} with {', '.join(modifiers)} "
            "(only screening CC and MLO views are analysed)",
        )
    if view not in SUPPORTED_VIEWS:
        raise _fail(
            path,
            IngestErrorCode.UNSUPPORTED_VIEW,
            f"unsupported view: {view.value} (only screening CC and MLO views are analysed)",
        )
    return view, notes


def read_spacing(ds: Dataset, path: Path) -> PixelSpacing:
    """Pixel spacing in mm, preferring the breast-plane PixelSpacing over ImagerPixelSpacing."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None:
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            raise _fail(
                path,
                IngestErrorCode.MISSING_SPACING,
                f"{keyword} is not two numbers: '{_shown(value)}'",
            ) from None
        low, high = SPACING_RANGE_MM
        if not (low <= row <= high and low <= col <= high):
            raise _fail(
                path,
                IngestErrorCode.MISSING_SPACING,
                f"implausible {keyword} {row:g}\\{col:g} mm (expected {low}-{high} mm)",
            )
        return PixelSpacing(row, col, keyword)
    raise _fail(
        path,
        IngestErrorCode.MISSING_SPACING,
        "missing pixel spacing: neither PixelSpacing nor ImagerPixelSpacing is present",
    )


def not_mammogram(header: Dataset) -> str | None:
    """Why a DICOM object is not a mammogram and so belongs to no exam the CAD analyses (another
    modality, or no image at all: an SR, a presentation state, this product's own outputs), or
    None for an MG object. The one rule every driver (`cad detect`, `cad batch`, `cad serve`)
    applies to the files it is given; it needs only the Modality of the header."""
    try:
        modality = _text(header, "Modality")
    except Exception:  # noqa: BLE001 - a malformed Modality is not MG
        modality = "(malformed)"
    if modality == "MG":
        return None
    return f"not a mammogram: Modality is '{_shown(modality or '')}' (expected 'MG')"


def is_image_object(header: Dataset) -> bool:
    """Whether a header belongs to an image object (Image Pixel module and an image storage SOP
    class): only these may be referenced as IMAGE content items of an SR or shown by a
    presentation state."""
    sop_class = str(header.get("SOPClassUID", ""))
    return bool(sop_class) and "Rows" in header and "Columns" in header and "Image" in UID(sop_class).name


def _check_identity(ds: Dataset, path: Path) -> None:
    if "SOPClassUID" not in ds and "Modality" not in ds:
        raise _fail(
            path,
            IngestErrorCode.UNREADABLE,
            "unreadable DICOM header: no SOPClassUID and no Modality",
        )
    reason = not_mammogram(ds)
    if reason:
        raise _fail(path, IngestErrorCode.NOT_MG, reason)
    sop_class = str(ds.get("SOPClassUID", ""))
    intent = _text(ds, "PresentationIntentType")
    if sop_class == MG_FOR_PROCESSING or intent == "FOR PROCESSING":
        raise _fail(
            path,
            IngestErrorCode.FOR_PROCESSING,
            "For Processing mammogram refused: only For Presentation images are analysed "
            "(send the processed image the workstation displays)",
        )
    if sop_class != MG_FOR_PRESENTATION:
        name = _shown(UID(sop_class).name) if sop_class else "absent"
        raise _fail(
            path,
            IngestErrorCode.UNSUPPORTED_SOP_CLASS,
            f"unsupported SOP class {_shown(sop_class) or '(none)'} ({name}); expected Digital "
            "Mammography X-Ray Image Storage - For Presentation",
        )
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            raise _fail(path, IngestErrorCode.MISSING_ATTRIBUTE, f"missing {keyword}")
        if not is_valid_uid(str(ds.get(keyword))):
            # UIDs name output folders and files: anything but a syntactically valid UID could
            # escape the output folder or collide, so it is refused before use
            raise _fail(path, IngestErrorCode.INVALID_UID, f"{keyword} is not a valid DICOM UID")
    if _text(ds, "BreastImplantPresent") == "YES":
        raise _fail(
            path,
            IngestErrorCode.IMPLANT_PRESENT,
            "breast implant present (BreastImplantPresent is YES): the CAD is not validated "
            "on implant images",
        )


#: ImageType values that mark a 2D image synthesized from a tomosynthesis acquisition
SYNTHESIZED_2D = frozenset({"GENERATED_2D", "SYNTHETIC", "SYNTHESIZED", "C-VIEW", "CVIEW", "S-VIEW"})
#: Estimated Radiographic Magnification Factor above which an image is a magnification view
#: (contact screening views are about 1.0-1.2; magnification views 1.5-2.0)
MAX_SCREENING_MAGNIFICATION = 1.3


def _check_scope(ds: Dataset, path: Path) -> None:
    """Refuse images outside the validated scope that the header makes plain (RC-033)."""
    body_part = _text(ds, "BodyPartExamined")
    if body_part and body_part != "BREAST":
        raise _fail(path, IngestErrorCode.OUT_OF_SCOPE,
                    f"out of scope: BodyPartExamined is '{_shown(body_part)}', not BREAST")
    image_type = {str(v).strip().upper() for v in (ds.get("ImageType") or [])}
    synthesized = sorted(image_type & SYNTHESIZED_2D)
    if synthesized:
        raise _fail(path, IngestErrorCode.OUT_OF_SCOPE,
                    f"out of scope: a 2D image synthesized from tomosynthesis (ImageType {_shown(synthesized[0])}); "
                    "the CAD is validated on acquired 2D mammograms only")
    magnification = ds.get("EstimatedRadiographicMagnificationFactor")
    try:
        factor = float(magnification) if magnification not in (None, "") else None
    except (TypeError, ValueError):
        factor = None
    if factor is not None and factor > MAX_SCREENING_MAGNIFICATION:
        raise _fail(path, IngestErrorCode.OUT_OF_SCOPE,
                    f"out of scope: magnification view (Estimated Radiographic Magnification Factor {factor:g} > "
                    f"{MAX_SCREENING_MAGNIFICATION:g})")
    if _text(ds, "PatientSex") == "M":
        raise _fail(path, IngestErrorCode.OUT_OF_SCOPE,
                    "out of scope: PatientSex is M; the intended population is women in breast screening")


def _check_pixel_format(ds: Dataset, path: Path) -> None:
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if ts not in SUPPORTED_TRANSFER_SYNTAXES:
        name = _shown(UID(ts).name) if ts else "absent"
        raise _fail(
            path,
            IngestErrorCode.UNSUPPORTED_TRANSFER_SYNTAX,
            f"unsupported transfer syntax {_shown(ts) or '(none)'} ({name})",
        )
    if "PixelData" not in ds:
        raise _fail(path, IngestErrorCode.CORRUPT_PIXEL_DATA, "no pixel data (7FE0,0010)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1))
        bits_allocated = int(ds.BitsAllocated)
        bits_stored = int(ds.BitsStored)
        photometric = str(ds.PhotometricInterpretation).strip()
    except (AttributeError, TypeError, ValueError) as exc:
        raise _fail(
            path, IngestErrorCode.MISSING_ATTRIBUTE, f"incomplete Image Pixel module ({type(exc).__name__})"
        ) from None
    if rows < MIN_SIDE or cols < MIN_SIDE or rows * cols * frames > MAX_PIXELS:
        raise _fail(
            path,
            IngestErrorCode.ABSURD_DIMENSIONS,
            f"absurd dimensions {rows} x {cols} x {frames} frame(s): expected one frame of "
            f"at least {MIN_SIDE} x {MIN_SIDE} and at most {MAX_PIXELS:,} pixels",
        )
    if frames != 1 or samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise _fail(
            path,
            IngestErrorCode.UNSUPPORTED_PIXEL_FORMAT,
            f"unsupported pixel format: {frames} frame(s), {samples} sample(s) per pixel, "
            f"{_shown(photometric)} (expected one MONOCHROME1/2 frame)",
        )
    if bits_allocated not in (8, 16) or not (1 <= bits_stored <= bits_allocated):
        raise _fail(
            path,
            IngestErrorCode.UNSUPPORTED_PIXEL_FORMAT,
            f"unsupported BitsAllocated {bits_allocated} / BitsStored {bits_stored}",
        )
    if ts in {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
              DeflatedExplicitVRLittleEndian}:
        expected = rows * cols * bits_allocated // 8
        actual = len(ds.PixelData)
        if actual < expected:
            raise _fail(
                path,
                IngestErrorCode.CORRUPT_PIXEL_DATA,
                f"truncated pixel data: {actual:,} bytes, expected {expected:,}",
            )


def voi_output_range(ds: Dataset) -> tuple[float, float]:
    """Output range of the VOI stage, as PS3.3 C.11.2 defines it for LUT and window."""
    voi_seq = ds.get("VOILUTSequence")
    if voi_seq:
        bits = int(voi_seq[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        low, high = 0.0, float(2**bits - 1)
    elif int(ds.PixelRepresentation) == 0:
        low, high = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        low, high = -float(2 ** (int(ds.BitsStored) - 1)), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return min(low, high), max(low, high)


def to_display(stored: np.ndarray, ds: Dataset) -> tuple[np.ndarray, list[str]]:
    """Stored values -> display values in [0, 1] (brighter = more attenuating)."""
    notes: list[str] = []
    values = apply_modality_lut(stored, ds)
    has_voi = bool(ds.get("VOILUTSequence")) or (
        "WindowCenter" in ds and "WindowWidth" in ds
    )
    if has_voi:
        if ds.get("VOILUTSequence") and values.dtype.kind == "f":
            # a LUT is indexed by integers; rescale output of integral slopes is integral
            values = np.rint(values).astype(np.int64)
        values = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        low, high = voi_output_range(ds)
    else:
        notes.append("no VOI LUT or window: scaled over the stored value range")
        values = values.astype(np.float64)
        low, high = float(values.min()), float(values.max())
    span = high - low if high > low else 1.0
    display = ((np.asarray(values, dtype=np.float64) - low) / span).astype(np.float32)
    np.clip(display, 0.0, 1.0, out=display)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        display = 1.0 - display
    return display, notes


def ref_from_dataset(ds: Dataset, path: Path) -> ImageRef:
    """Best-effort identity of a file that failed validation, for recording it in outputs: each
    attribute on its own, so that one malformed attribute does not lose the others (above all
    the StudyInstanceUID, which files the failure under its study)."""

    def safely(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except Exception:  # noqa: BLE001 - a malformed attribute is simply not known
            return None

    lat = safely(lambda: _text(ds, "ImageLaterality")) or safely(lambda: _text(ds, "Laterality"))
    view = safely(lambda: VIEW_POSITIONS.get(_text(ds, "ViewPosition") or ""))
    coded = safely(lambda: _view_from_code(ds.ViewCodeSequence[0]) if ds.get("ViewCodeSequence") else None)
    sop = safely(lambda: str(ds.get("SOPInstanceUID", ""))) or ""
    study = safely(lambda: str(ds.get("StudyInstanceUID", ""))) or ""
    return ImageRef(
        path,
        sop if is_valid_uid(sop) else None,
        study if is_valid_uid(study) else None,
        Laterality(lat) if lat in ("L", "R") else None,
        coded or view,
    )


def header_of(ds: Dataset) -> Dataset:
    """The dataset's attributes without Pixel Data (and its file meta), kept for DICOM outputs."""
    header = Dataset()
    for element in ds:
        if element.tag != PIXEL_DATA_TAG:
            header.add(element)
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    return header


def read_dataset(source: Path | str | BinaryIO, path: Path | None = None) -> Dataset:
    """Parse a DICOM file (header now, pixel data on first use)."""
    shown = path or Path(str(getattr(source, "name", source)))
    size = _source_size(source)
    if size is not None and size > MAX_FILE_BYTES:
        raise _fail(shown, IngestErrorCode.ABSURD_DIMENSIONS,
                    f"file is {size:,} bytes, at most {MAX_FILE_BYTES:,} are read")
    try:
        ds = pydicom.dcmread(source, defer_size="256 KB")
    except InvalidDicomError:
        raise _fail(
            shown, IngestErrorCode.NOT_DICOM, "not a DICOM file (no DICM preamble or header)"
        ) from None
    except FileNotFoundError:
        raise _fail(shown, IngestErrorCode.UNREADABLE, "file not found") from None
    except Exception as exc:  # noqa: BLE001 - a malformed header raises many types; all mean "unreadable"
        raise _fail(
            shown,
            IngestErrorCode.UNREADABLE,
            f"unreadable DICOM header ({type(exc).__name__})",
        ) from None
    header = _header_bytes(ds)
    if header > MAX_HEADER_BYTES:
        raise _fail(shown, IngestErrorCode.ABSURD_DIMENSIONS,
                    f"header (every element but Pixel Data) is {header:,} bytes, at most {MAX_HEADER_BYTES:,}")
    return ds


def _source_size(source: Path | str | BinaryIO) -> int | None:
    """The bytes a file or stream holds (None when it cannot tell, e.g. a pipe)."""
    try:
        if isinstance(source, (str, Path)):
            return Path(source).stat().st_size
        position = source.tell()
        size = source.seek(0, io.SEEK_END)
        source.seek(position)
        return size - position
    except (OSError, ValueError, AttributeError):
        return None


def _header_bytes(ds: Dataset) -> int:
    """Bytes of every element but Pixel Data, from the raw elements before their values are
    converted (sequences, which pydicom parses while reading, by their items; deferred values by
    their length, unread)."""
    total = 0
    for tag in list(ds.keys()):
        if tag == PIXEL_DATA_TAG:
            continue
        raw = ds.get_item(tag, keep_deferred=True)
        value = getattr(raw, "value", None)
        length = getattr(raw, "length", None)
        if isinstance(value, (bytes, bytearray, str)):
            total += len(value)
        elif getattr(raw, "VR", None) == "SQ" and value is not None:
            total += sum(_header_bytes(item) for item in value if isinstance(item, Dataset))
        elif isinstance(length, int) and length != 0xFFFFFFFF:
            total += length
    return total


def _parse_every_element(ds: Dataset, path: Path) -> None:
    """Convert every element now (Pixel Data excepted): pydicom parses values on first use, so
    a malformed element would otherwise fail later, outside ingest, and stop the whole study."""
    pending: list[Dataset] = [ds]
    if isinstance(getattr(ds, "file_meta", None), Dataset):
        pending.append(ds.file_meta)
    while pending:
        current = pending.pop()
        for tag in list(current.keys()):
            if tag == PIXEL_DATA_TAG:
                continue
            try:
                element = current[tag]
                value = element.value
                if element.VR == "SQ":
                    pending.extend(value)
            except Exception as exc:  # noqa: BLE001 - pydicom raises many types; all mean "malformed"
                raise _fail(path, IngestErrorCode.MALFORMED_ELEMENT,
                            f"malformed DICOM element {tag} ({type(exc).__name__})") from None


#: what reading a header attribute of the wrong VR or form raises (a sequence that is a number,
#: a missing value, an unknown VR in Pixel Data)
WRONG_FORM = (TypeError, AttributeError, ValueError, IndexError, KeyError, NotImplementedError, OverflowError)


def image_from_dataset(ds: Dataset, path: Path) -> MammogramImage:
    """Validate a parsed dataset and decode it into a :class:`MammogramImage`."""
    _parse_every_element(ds, path)
    try:
        return _image_from_dataset(ds, path)
    except WRONG_FORM as exc:
        log.debug("attribute of unexpected form in %s", path.name, exc_info=True)
        raise _fail(path, IngestErrorCode.MALFORMED_ELEMENT,
                    f"a header attribute has an unexpected value representation or form ({type(exc).__name__})"
                    ) from None


def _image_from_dataset(ds: Dataset, path: Path) -> MammogramImage:
    _check_identity(ds, path)
    _check_scope(ds, path)
    laterality, lat_notes = read_laterality(ds, path)
    view, view_notes = read_view(ds, path)
    spacing = read_spacing(ds, path)
    _check_pixel_format(ds, path)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoders raise many types; all mean "corrupt"
        raise _fail(
            path,
            IngestErrorCode.CORRUPT_PIXEL_DATA,
            f"pixel data cannot be decoded ({type(exc).__name__}: {str(exc)[:120]})",
        ) from None
    if stored.shape != (int(ds.Rows), int(ds.Columns)):
        raise _fail(
            path,
            IngestErrorCode.CORRUPT_PIXEL_DATA,
            f"decoded pixel array is {stored.shape}, header says {int(ds.Rows)} x {int(ds.Columns)}",
        )
    try:
        display, pixel_notes = to_display(stored, ds)
    except (TypeError, ValueError, ArithmeticError, IndexError, AttributeError) as exc:
        raise _fail(
            path,
            IngestErrorCode.UNSUPPORTED_PIXEL_FORMAT,
            f"modality LUT, VOI LUT or window values cannot be applied ({type(exc).__name__})",
        ) from None
    ts = str(ds.file_meta.TransferSyntaxUID)
    notes = lat_notes + view_notes + pixel_notes
    if ts in LOSSY_TRANSFER_SYNTAXES or _text(ds, "LossyImageCompression") == "01":
        notes.append("lossy compressed image")
    orientation = ds.get("PatientOrientation")
    patient_orientation = (
        (str(orientation[0]), str(orientation[1]))
        if orientation is not None and len(orientation) == 2
        else None
    )
    return MammogramImage(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        laterality=laterality,
        view=view,
        pixels=display,
        spacing=spacing,
        photometric_interpretation=str(ds.PhotometricInterpretation).strip(),
        bits_stored=int(ds.BitsStored),
        transfer_syntax_uid=ts,
        patient_orientation=patient_orientation,
        study_date=str(ds.get("StudyDate", "")) or None,
        content_date=str(ds.get("ContentDate", "")) or None,
        warnings=tuple(notes),
        header=header_of(ds),
    )


def read_image(path: Path | str) -> MammogramImage:
    """Read one MG file; raises :class:`IngestError` naming the file and the problem."""
    path = Path(path)
    return image_from_dataset(read_dataset(path), path)
