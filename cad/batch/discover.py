"""Finding the studies of an archive without decoding a pixel: every file's header is read up to
the pixel data for its Study and SOP Instance UIDs and modality, and files are grouped by study;
on a DICOMweb PACS, QIDO-RS lists the MG studies and their instances (fetched by the worker).

What is kept per file is its path and two UIDs (a few hundred bytes), so discovery of a million
files holds a few hundred MB; pixels are read only by the worker that analyses the study.
A file that is not DICOM, or not an MG image, is recorded with why, never silently dropped.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from cad.io.dicomweb import DicomWeb

#: header keywords discovery reads (everything before the pixel data is parsed, these are kept)
KEYWORDS = ("StudyInstanceUID", "SOPInstanceUID", "Modality")


@dataclass(frozen=True)
class StudyWork:
    """One unit of work: a study and its files (the instance set keys it in the ledger)."""

    study_uid: str
    #: local files (empty for a study on a DICOMweb PACS)
    files: tuple[str, ...]
    sop_uids: tuple[str, ...]
    #: for a study on a DICOMweb PACS: each instance's series, in the order of ``sop_uids``
    series_uids: tuple[str, ...] = ()

    @property
    def remote(self) -> bool:
        """Whether the worker fetches the study with WADO-RS (else it reads ``files``)."""
        return bool(self.series_uids)

    @property
    def instances_sha256(self) -> str:
        """SHA-256 of the sorted SOP Instance UIDs: a study whose instances change is new work."""
        return hashlib.sha256("\n".join(sorted(self.sop_uids)).encode()).hexdigest()


@dataclass
class Archive:
    """The studies found, and the files that are not work (with why)."""

    studies: list[StudyWork] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _files(inputs: Iterable[Path]) -> Iterator[Path]:
    for root in inputs:
        if root.is_file() and root.suffix.lower() == ".csv":
            yield from _manifest(root)
        elif root.is_file():
            yield root
        else:
            for folder, _, names in sorted(os.walk(root)):
                for name in sorted(names):
                    yield Path(folder) / name


def _manifest(path: Path) -> Iterator[Path]:
    """The files named in a manifest CSV (column ``path``; relative paths from the CSV's folder)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"{path}: a manifest needs a 'path' column")
        for row in reader:
            value = (row.get("path") or "").strip()
            if value:
                file = Path(value)
                yield file if file.is_absolute() else path.parent / file


def discover(inputs: Iterable[Path]) -> Archive:
    """Group every file under ``inputs`` (folders, files or manifest CSVs) into studies."""
    archive = Archive()
    by_study: dict[str, list[tuple[str, str]]] = {}
    for path in _files(inputs):
        if path.name in {"DICOMDIR"} or path.name.startswith("."):
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(KEYWORDS))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            archive.skipped.append((str(path), f"not a DICOM file ({type(exc).__name__})"))
            continue
        study_uid, sop_uid = str(header.get("StudyInstanceUID", "")), str(header.get("SOPInstanceUID", ""))
        if header.get("Modality") != "MG":
            archive.skipped.append((str(path), f"modality {header.get('Modality') or 'absent'}, not MG"))
            continue
        if not study_uid or not sop_uid:
            archive.skipped.append((str(path), "no Study or SOP Instance UID"))
            continue
        by_study.setdefault(study_uid, []).append((sop_uid, str(path)))
    for study_uid in sorted(by_study):
        # every file goes to the worker, duplicates too: the loader records them as `cad detect` does
        instances = sorted(by_study[study_uid])
        archive.studies.append(StudyWork(study_uid, tuple(p for _, p in instances),
                                         tuple(sorted({s for s, _ in instances}))))
    return archive


def discover_dicomweb(web: DicomWeb, since: str | None = None) -> Archive:
    """The MG studies on a DICOMweb PACS (QIDO-RS), each with its MG instances; a study whose
    instance search finds no MG image is listed as not work, with why."""
    archive = Archive()
    for study in sorted(web.mg_studies(since), key=lambda s: s.study_uid):
        instances = sorted(web.mg_instances(study.study_uid), key=lambda i: i.sop_uid)
        if not instances:
            archive.skipped.append((f"{web.url} study {study.study_uid}", "no MG instance listed"))
            continue
        archive.studies.append(StudyWork(study.study_uid, (), tuple(i.sop_uid for i in instances),
                                         tuple(i.series_uid for i in instances)))
    return archive
