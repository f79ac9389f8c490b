"""DICOM in and out: ingest of MG images into typed objects (and, later, SR/GSPS writers)."""

from cad.io.dicom_reader import read_image
from cad.io.errors import IngestError, IngestErrorCode
from cad.io.image import (
    Breast,
    ImageRef,
    IngestFailure,
    IngestResult,
    Laterality,
    MammogramImage,
    PixelSpacing,
    Study,
    View,
)
from cad.io.loader import load

__all__ = [
    "Breast", "ImageRef", "IngestError", "IngestErrorCode", "IngestFailure", "IngestResult",
    "Laterality", "MammogramImage", "PixelSpacing", "Study", "View", "load", "read_image",
]
