"""Typed image objects produced by ingest: one contract for everything downstream."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from cad.io.errors import IngestErrorCode


class Laterality(str, enum.Enum):
    """Which breast an image shows."""

    LEFT = "L"
    RIGHT = "R"


class View(str, enum.Enum):
    """Mammographic projection (DICOM CID 4014 / ViewPosition abbreviations)."""

    CC = "CC"
    MLO = "MLO"
    ML = "ML"
    LM = "LM"
    XCCL = "XCCL"
    XCCM = "XCCM"
    FB = "FB"
    SIO = "SIO"
    ISO = "ISO"
    LMO = "LMO"


#: Views the CAD analyses; every other view is recognised and reported as unsupported.
SUPPORTED_VIEWS: frozenset[View] = frozenset({View.CC, View.MLO})


@dataclass(frozen=True)
class PixelSpacing:
    """Physical size of one pixel, with the attribute it was read from."""

    row_mm: float
    column_mm: float
    source: str

    @property
    def mean_mm(self) -> float:
        return 0.5 * (self.row_mm + self.column_mm)


@dataclass(frozen=True)
class ImageRef:
    """What identifies an image in outputs, known even when its pixels could not be used."""

    path: Path
    sop_instance_uid: str | None
    study_instance_uid: str | None
    laterality: Laterality | None
    view: View | None


@dataclass(eq=False)
class MammogramImage:
    """A mammogram ready for analysis.

    ``pixels`` is float32 in [0, 1], in display space after the Modality LUT, the VOI LUT or
    window, and MONOCHROME1 inversion: larger values are more attenuating (brighter), as a
    reader sees the image. ``pixels[row, column]``.
    """

    path: Path
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    laterality: Laterality
    view: View
    pixels: np.ndarray
    spacing: PixelSpacing
    photometric_interpretation: str
    bits_stored: int
    transfer_syntax_uid: str
    patient_orientation: tuple[str, str] | None = None
    study_date: str | None = None
    content_date: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: The file's attributes without pixel data: patient, study and series facts that DICOM
    #: outputs (SR, presentation state) must copy from the images they describe.
    header: Dataset | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))

    @property
    def ref(self) -> ImageRef:
        return ImageRef(
            self.path, self.sop_instance_uid, self.study_instance_uid, self.laterality, self.view
        )


@dataclass(frozen=True)
class IngestFailure:
    """An input that cannot be analysed, kept so every output can say which and why."""

    ref: ImageRef
    code: IngestErrorCode
    message: str
    #: Attributes read before the failure (no pixel data), when the file was DICOM at all.
    header: Dataset | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.ref.path}: {self.message}"


@dataclass
class Breast:
    """The analysable images of one breast in one study."""

    laterality: Laterality
    cc: list[MammogramImage] = field(default_factory=list)
    mlo: list[MammogramImage] = field(default_factory=list)


@dataclass
class Study:
    """One screening exam: analysable images and the inputs that could not be analysed."""

    study_instance_uid: str
    images: list[MammogramImage] = field(default_factory=list)
    failures: list[IngestFailure] = field(default_factory=list)

    def breast(self, laterality: Laterality) -> Breast:
        breast = Breast(laterality)
        for image in self.images:
            if image.laterality is laterality:
                if image.view is View.CC:
                    breast.cc.append(image)
                elif image.view is View.MLO:
                    breast.mlo.append(image)
        return breast

    @property
    def breasts(self) -> list[Breast]:
        return [self.breast(lat) for lat in Laterality]


@dataclass
class IngestResult:
    """Everything read from the inputs: studies of MG images; files that could not be read as
    DICOM at all (they name no study, and might have been mammograms: not analysed); and DICOM
    files that are not mammograms (other modalities, SRs, presentation states), which belong to
    no exam and are listed with why."""

    studies: list[Study] = field(default_factory=list)
    unassigned_failures: list[IngestFailure] = field(default_factory=list)
    not_mammograms: list[IngestFailure] = field(default_factory=list)

    @property
    def failures(self) -> list[IngestFailure]:
        """Every input that is not an analysable image: not analysed, or not a mammogram."""
        return [*self.not_analysed, *self.not_mammograms]

    @property
    def not_analysed(self) -> list[IngestFailure]:
        """Files that might have been mammograms and could not be read or analysed."""
        out = list(self.unassigned_failures)
        for study in self.studies:
            out.extend(study.failures)
        return out

    @property
    def images(self) -> list[MammogramImage]:
        return [image for study in self.studies for image in study.images]
