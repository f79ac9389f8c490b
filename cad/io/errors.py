"""Ingest errors: one specific, patient-free reason per refused file."""

from __future__ import annotations

import enum
from pathlib import Path

from cad.errors import CadError


class IngestErrorCode(str, enum.Enum):
    """Why an input file cannot be analysed. The value is stable and appears in outputs."""

    NOT_DICOM = "not_dicom"
    UNREADABLE = "unreadable"
    MALFORMED_ELEMENT = "malformed_element"
    NOT_MG = "not_mammography"
    UNSUPPORTED_SOP_CLASS = "unsupported_sop_class"
    FOR_PROCESSING = "for_processing"
    MISSING_LATERALITY = "missing_laterality"
    CONTRADICTORY_LATERALITY = "contradictory_laterality"
    MISSING_VIEW = "missing_view"
    CONTRADICTORY_VIEW = "contradictory_view"
    UNSUPPORTED_VIEW = "unsupported_view"
    MISSING_SPACING = "missing_pixel_spacing"
    MISSING_ATTRIBUTE = "missing_attribute"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    UNSUPPORTED_PIXEL_FORMAT = "unsupported_pixel_format"
    CORRUPT_PIXEL_DATA = "corrupt_pixel_data"
    ABSURD_DIMENSIONS = "absurd_dimensions"
    IMPLANT_PRESENT = "breast_implant_present"
    #: outside the validated scope by its header: another body part, a synthesized 2D image from
    #: tomosynthesis, a magnification view, a patient outside the intended population (RC-033)
    OUT_OF_SCOPE = "out_of_scope"
    DUPLICATE_INSTANCE = "duplicate_instance"
    INVALID_UID = "invalid_uid"
    PATIENT_MISMATCH = "patient_mismatch"
    #: an exception the checks do not anticipate: a defect or an uncovered input; the traceback
    #: is in the log, never a clinical-sounding reason
    INTERNAL_ERROR = "internal_error"


class IngestError(CadError):
    """A file that cannot be analysed, with the file and the problem named.

    ``str(error)`` is the one line shown to users: ``<path>: <message>``. Messages never contain
    patient identifiers (names, IDs, birth dates); they name DICOM attributes and values only.
    """

    def __init__(self, path: Path | str, code: IngestErrorCode, message: str) -> None:
        self.path = Path(path)
        self.code = code
        self.message = message
        super().__init__(f"{self.path}: {message}")
