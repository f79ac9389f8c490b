"""Finding the studies of an archive without decoding a pixel: every file's header is read up to
the pixel data for its Study and SOP Instance UIDs and modality, and files are grouped by study;
on a DICOMweb PACS, QIDO-RS lists the MG studies and their instances (fetched by the worker).

What is kept per file is its path and two UIDs (a few hundred bytes), so discovery of a million
files holds a few hundred MB; pixels are read only by the worker that analyses the study.
The rule for what is work is the one `cad detect` and `cad serve` apply (docs/ingest.md): a DICOM
object that is not a mammogram (another modality, an SR or presentation state, this product's
own outputs) is listed as skipped with why; a file that is not DICOM at all is listed as not
analysed (it might have been a mammogram); sidecar and hidden files and DICOMDIR are not read.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from cad.errors import UsageError
from cad.io.dicom_reader import not_mammogram
from cad.io.dicomweb import DicomWeb
from cad.io.loader import iter_input_files
from cad.io.uids import instance_set_sha256

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
        """Identity of the instance set (:func:`cad.io.uids.instance_set_sha256`): a study whose
        instances change is new work."""
        return instance_set_sha256(self.sop_uids)


@dataclass
class Archive:
    """The studies found, and the files that are not work (with why): ``skipped`` DICOM objects
    that are not mammograms (never part of an exam) and ``unreadable`` files that are not DICOM
    (which might have been mammograms, so they count as not analysed)."""

    studies: list[StudyWork] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def extend(self, other: Archive) -> None:
        """Add another source's studies (kept in study order) and files that are not work."""
        self.studies = sorted(self.studies + other.studies, key=lambda w: w.study_uid)
        self.skipped += other.skipped
        self.unreadable += other.unreadable


def _files(inputs: Iterable[Path]) -> Iterator[Path]:
    """The files of the archive: those named in manifest CSVs, named directly, or found below
    folders by the rule `cad detect` uses (sidecars, hidden files and DICOMDIR are not read)."""
    for root in inputs:
        if root.is_file() and root.suffix.lower() == ".csv":
            yield from _manifest(root)
        else:
            yield from iter_input_files([root])


def _manifest(path: Path) -> Iterator[Path]:
    """The files named in a manifest CSV (column ``path``; relative paths from the CSV's folder)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise UsageError(f"{path}: a manifest needs a 'path' column")
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
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(KEYWORDS))
        except InvalidDicomError:
            archive.unreadable.append((str(path), "not a DICOM file (no DICM preamble or header)"))
            continue
        except (OSError, ValueError, EOFError) as exc:
            archive.unreadable.append((str(path), f"unreadable DICOM header ({type(exc).__name__})"))
            continue
        reason = not_mammogram(header)
        if reason:
            archive.skipped.append((str(path), reason))
            continue
        study_uid, sop_uid = str(header.get("StudyInstanceUID", "")), str(header.get("SOPInstanceUID", ""))
        if not study_uid or not sop_uid:
            archive.unreadable.append((str(path), "no Study or SOP Instance UID"))
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
