"""Load files and folders into studies, never losing an input silently."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydicom.dataset import Dataset

from cad.io.dicom_reader import header_of, image_from_dataset, read_dataset, ref_from_dataset
from cad.io.errors import IngestError, IngestErrorCode
from cad.io.image import ImageRef, IngestFailure, IngestResult, MammogramImage, Study
from cad.io.uids import uid_tail

log = logging.getLogger(__name__)

# pydicom's own warnings about malformed values quote the raw bytes, which may hold patient
# identifiers; ingest states each file's problem itself, by attribute, never by value
# (pydicom sends each such warning to its logger too)
warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
logging.getLogger("pydicom").setLevel(logging.ERROR)

#: Sidecar files that may sit beside DICOM files in a folder and are not images.
SIDECAR_SUFFIXES = frozenset(
    {".json", ".png", ".jpg", ".jpeg", ".txt", ".md", ".csv", ".xml", ".html", ".pdf", ".yaml",
     ".yml", ".log", ".svg"}
)


def iter_input_files(inputs: Iterable[Path | str]) -> Iterator[Path]:
    """Files named directly, and every non-sidecar file below the folders named, sorted."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.suffix.lower() in SIDECAR_SUFFIXES or child.name == "DICOMDIR":
                    continue
                if any(part.startswith(".") for part in child.relative_to(path).parts):
                    continue
                yield child
        else:
            yield path


def load_file(path: Path) -> MammogramImage | IngestFailure:
    """One file -> an image, or a failure that says which file and why. Never raises: whatever
    one file holds, the other files of its study are still analysed."""
    ds = None
    try:
        ds = read_dataset(path)
        return image_from_dataset(ds, path)
    except IngestError as err:
        log.warning("not analysed: %s [%s]", err, err.code.value)
        return _failure(path, ds, err.code, err.message)
    except Exception as exc:
        message = f"internal error while reading the file ({type(exc).__name__}); the traceback is in the log"
        log.error("not analysed: %s: %s", path, message, exc_info=True)
        return _failure(path, ds, IngestErrorCode.INTERNAL_ERROR, message)


def _failure(path: Path, ds: Dataset | None, code: IngestErrorCode, message: str) -> IngestFailure:
    """The failure of one file, with as much of its identity as can be read safely."""
    if ds is None:
        return IngestFailure(ImageRef(path, None, None, None, None), code, message, None)
    try:
        header = header_of(ds)
    except Exception:  # noqa: BLE001 - a malformed header is not kept; the failure itself must survive
        header = None
    return IngestFailure(ref_from_dataset(ds, path), code, message, header)


def load(inputs: Iterable[Path | str]) -> IngestResult:
    """Read every input into studies grouped by StudyInstanceUID, in a stable order.

    Only mammograms (Modality MG) make up a study; any other DICOM object goes to
    ``not_mammograms`` with why, and a file that is not DICOM at all to ``unassigned_failures``.
    A duplicate SOPInstanceUID within a study is recorded as a failure, not merged.
    """
    studies: dict[str, Study] = {}
    result = IngestResult()
    seen: dict[str, set[str]] = {}
    for path in iter_input_files(inputs):
        outcome = load_file(path)
        if isinstance(outcome, IngestFailure) and outcome.code is IngestErrorCode.NOT_MG:
            result.not_mammograms.append(outcome)  # belongs to no exam (never an image of an SR)
            continue
        if isinstance(outcome, IngestFailure):
            uid = outcome.ref.study_instance_uid
            if uid:
                studies.setdefault(uid, Study(uid)).failures.append(outcome)
            else:
                result.unassigned_failures.append(outcome)
            continue
        study = studies.setdefault(outcome.study_instance_uid, Study(outcome.study_instance_uid))
        instances = seen.setdefault(outcome.study_instance_uid, set())
        if outcome.sop_instance_uid in instances:
            message = "duplicate SOPInstanceUID in this study: the first copy is analysed"
            log.warning("not analysed: %s: %s", path, message)
            study.failures.append(IngestFailure(outcome.ref, IngestErrorCode.DUPLICATE_INSTANCE, message))
            continue
        instances.add(outcome.sop_instance_uid)
        study.images.append(outcome)
    for study in studies.values():
        _refuse_mixed_patients(study)
    result.studies = [studies[uid] for uid in sorted(studies)]
    return result


#: attributes that must agree between the images of one study (a study names one patient)
PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate")


def _refuse_mixed_patients(study: Study) -> None:
    """A study whose images name different patients is not analysed at all: which images
    belong to the exam cannot be known, and marks must never reach another patient's study."""
    identities = {tuple(str(image.header.get(k, "")) if image.header is not None else "" for k in PATIENT_KEYS)
                  for image in study.images}
    if len(identities) <= 1:
        return
    differing = [k for n, k in enumerate(PATIENT_KEYS) if len({i[n] for i in identities}) > 1]
    message = (f"the study's images name {len(identities)} different patients ({', '.join(differing)} differ); "
               "no image of the study is analysed")
    log.warning("not analysed: study %s: %s", uid_tail(study.study_instance_uid), message)
    study.failures.extend(IngestFailure(image.ref, IngestErrorCode.PATIENT_MISMATCH, message, image.header)
                          for image in study.images)
    study.images = []
