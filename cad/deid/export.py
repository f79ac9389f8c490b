"""De-identified export: `cad deidentify INPUT... --out DIR --secret-file FILE` (RC-040, SRS-SEC-003).

For cases sent out of the site (a problem report to the manufacturer, training data). Each DICOM
file is de-identified by dicognito (chosen over deid by measurement, docs/deidentify.md), which
applies the PS3.15 Basic Application Level Confidentiality Profile's replacements: names, IDs,
accession and study numbers, institutions and addresses replaced with generated values, every
UID remapped, dates and times shifted by one offset, all derived from the site's secret, so that
a study stays one study and a second export with the same secret gives the same identifiers.
Private attributes are removed. Person names become the placeholder ``DEIDENTIFIED`` (the
patient's with the remapped Patient ID after it), never a realistic invented name that a QA
person could take for a real patient. Patient sex, age, size and weight are kept (Retain Patient
Characteristics Option: they describe the screened population).

Burned-in text: in a mammogram, labels, markers and annotations lie outside the breast. The
pixels outside the breast (found by the device's own breast mask, widened by a margin so skin is
kept) are set to the background value (Clean Pixel Data Option), whatever Burned In Annotation
says. An image whose breast cannot be found, or that the device cannot read, is refused with the
reason rather than exported with text it could not check; so is an image that is not MG. Objects
without pixels (SR, presentation states) are exported with their headers de-identified.

The options applied are recorded in every output (Deidentification Method Code Sequence, CID
7050; Patient Identity Removed YES). The report names outputs and refusals by position only:
it travels with the export, and input file names may themselves identify a patient.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian
from scipy import ndimage

import cad
from cad.errors import UsageError
from cad.io import atomic
from cad.io.dicom_reader import image_from_dataset, read_dataset
from cad.io.errors import IngestError
from cad.io.loader import iter_input_files
from cad.preprocess.mask import NoBreastError, segment_breast

log = logging.getLogger(__name__)

REPORT_FILE = "deidentify-report.json"
#: margin kept around the breast mask (mm): skin and the nipple stay, labels and markers go
MARGIN_MM = 3.0
#: the PS3.15 profile and options every output applies (CID 7050)
METHODS = (codes.DCM.BasicApplicationConfidentialityProfile, codes.DCM.CleanPixelDataOption,
           codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption,
           codes.DCM.RetainPatientCharacteristicsOption)


@dataclass
class ExportReport:
    """What an export did (no source names: the report leaves the site with the files)."""

    exported: list[str] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    masked_pixels: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"software": f"mammo-cad {cad.__version__}", "exported": len(self.exported),
                "refused": [{"input": n, "reason": r} for n, r in self.refused],
                "files": sorted(self.exported), "pixels_set_to_background": self.masked_pixels,
                "methods": [f"{c.value} {c.meaning}" for c in METHODS]}


def read_secret(path: Path) -> str:
    """The site's de-identification secret: at least 16 characters on the file's first line."""
    secret = path.read_text().strip().splitlines()[0].strip() if path.read_text().strip() else ""
    if len(secret) < 16:
        raise UsageError(f"{path}: the secret must be at least 16 characters on one line")
    return secret


def _clean_pixels(ds: Dataset, path: Path) -> int:
    """Set the stored pixels outside the (widened) breast to the background; the count set.
    IngestError or NoBreastError when the breast cannot be found."""
    image = image_from_dataset(ds, path)  # the device's own reading: refuses what it cannot analyse
    mask = segment_breast(image.pixels, image.spacing.mean_mm)
    margin = max(1, int(round(MARGIN_MM / (image.spacing.mean_mm * mask.factor))))
    grid = ndimage.binary_dilation(mask.mask, iterations=margin)
    rows, cols = image.pixels.shape
    keep = np.repeat(np.repeat(grid, mask.factor, axis=0), mask.factor, axis=1)[:rows, :cols]
    if keep.shape != (rows, cols):  # a ragged last block: pad with its neighbours
        keep = np.pad(keep, ((0, rows - keep.shape[0]), (0, cols - keep.shape[1])), mode="edge")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    stored = ds.pixel_array.copy()
    background = stored.max() if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1" else stored.min()
    changed = int((~keep & (stored != background)).sum())
    stored[~keep] = background
    ds.PixelData = stored.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.BurnedInAnnotation = "NO"
    return changed


#: the family name every person name of an export gets: unmistakably not a real person's
PLACEHOLDER_NAME = "DEIDENTIFIED"


def _placeholder_names(ds: Dataset) -> None:
    """Replace the realistic fake names dicognito generates by a placeholder a QA person cannot
    take for a real patient: the patient's carries the (consistently remapped) Patient ID, so
    patients stay distinguishable; every other person name is the placeholder alone."""
    for element in ds.iterall():
        if element.VR == "PN" and element.value:
            element.value = PLACEHOLDER_NAME
    if ds.get("PatientName"):
        ds.PatientName = f"{PLACEHOLDER_NAME}^{ds.get('PatientID', '')}".rstrip("^")


def _record_method(ds: Dataset, anonymizer_version: str) -> None:
    ds.PatientIdentityRemoved = "YES"
    # one value per step (LO, VM 1-n, 64 characters each): never cut mid-version
    ds.DeidentificationMethod = [f"mammo-cad {cad.__version__} deidentify",
                                 f"PS3.15 Basic Profile by dicognito {anonymizer_version}",
                                 "pixels outside the breast cleaned", "person names set to a placeholder"]
    items = []
    for code in METHODS:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items


def deidentify(inputs: Iterable[Path], out: Path, secret: str) -> ExportReport:
    """De-identify every file under ``inputs`` into ``out/<new StudyInstanceUID>/``."""
    from importlib.metadata import version

    from dicognito.anonymizer import Anonymizer

    # dicognito's seed: derived from the secret, so the secret itself is never the seed text
    anonymizer = Anonymizer(seed=hashlib.sha256(f"mammo-cad-deid:{secret}".encode()).hexdigest())
    tool = version("dicognito")
    report = ExportReport()
    out.mkdir(parents=True, exist_ok=True)
    for number, path in enumerate(iter_input_files(list(inputs)), start=1):
        try:
            ds = read_dataset(path)
            if "PixelData" in ds:
                if ds.get("Modality") != "MG":
                    report.refused.append((number, f"modality {ds.get('Modality') or 'absent'}: burned-in text is "
                                                   "checked on MG images only"))
                    continue
                report.masked_pixels += _clean_pixels(ds, path)
        except IngestError as exc:
            report.refused.append((number, f"burned-in text cannot be checked: {exc.message}"[:300]))
            continue
        except NoBreastError as exc:
            report.refused.append((number, f"burned-in text cannot be checked: no breast found ({exc})"[:300]))
            continue
        ds.remove_private_tags()
        anonymizer.anonymize(ds)
        _placeholder_names(ds)
        _record_method(ds, tool)
        target = out / str(ds.StudyInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
        report.exported.append(str(target.relative_to(out)))
    atomic.write_text(out / REPORT_FILE, json.dumps(report.as_dict(), indent=2) + "\n")
    return report
