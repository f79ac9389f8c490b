"""The DICOM objects written for one analysed study: Mammography CAD SR and presentation state.

One entry point for `cad detect` (and later the PACS service): it derives the UIDs, picks the
headers the objects must copy, and writes ``cad-sr.dcm`` and ``cad-pr.dcm`` next to
findings.json.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DA, DT, TM

from cad.errors import UsageError
from cad.io.dicom_reader import is_image_object
from cad.io.errors import IngestErrorCode
from cad.io.image import Study
from cad.io.uids import derived_uid, output_uids, uid_tail
from cad.result.model import StudyResult

log = logging.getLogger(__name__)
SR_NAME = "cad-sr.dcm"
PR_NAME = "cad-pr.dcm"
#: the SOP classes the device creates (the DICOM Conformance Statement is generated from these)
OUTPUT_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR Storage",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
}
#: the transfer syntax the outputs are written in (and proposed in by the C-STORE SCU)
OUTPUT_TRANSFER_SYNTAX = ExplicitVRLittleEndian
#: environment variable that fixes the objects' creation date and time (reproducible outputs)
EPOCH_VARIABLE = "SOURCE_DATE_EPOCH"
#: the creation dates and times of an SR or presentation state (all else follows from the inputs)
CREATION_DATES = (("InstanceCreationDate", "InstanceCreationTime"), ("ContentDate", "ContentTime"),
                  ("PresentationCreationDate", "PresentationCreationTime"))


def creation_instant() -> datetime:
    """When the DICOM objects of a study are created: now (local time, as highdicom writes it), or
    the UTC instant ``SOURCE_DATE_EPOCH`` names (whole seconds since 1970, the reproducible-builds
    convention), so that two runs over the same inputs (`cad detect`, `cad batch`, a re-run in an
    acceptance protocol) give byte-identical objects. ValueError for a value that is not that."""
    value = os.environ.get(EPOCH_VARIABLE, "").strip()
    if not value:
        return datetime.now()
    if not value.isdigit():
        raise UsageError(f"{EPOCH_VARIABLE}={value[:40]}: expected whole seconds since 1970-01-01 UTC")
    return datetime.fromtimestamp(int(value), tz=UTC).replace(tzinfo=None)


def stamp_creation(dataset: Dataset, when: datetime) -> None:
    """Give every creation date and time of ``dataset`` (the instance, its content or presentation,
    the contributing equipment) the one instant ``when``."""
    for date, time in CREATION_DATES:
        if date in dataset:
            setattr(dataset, date, DA(when.date()))
            setattr(dataset, time, TM(when.time()))
    for item in dataset.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(when)


@dataclass(frozen=True)
class DicomOutputs:
    sr: Path | None
    #: The first presentation state; ``prs`` holds all of them (one per image size).
    pr: Path | None
    #: Why no presentation state was written, when none was (the SR still was).
    pr_problem: str | None = None
    prs: tuple[Path, ...] = ()
    #: the SOP Instance UIDs written: the SR's, and each presentation state's (in ``prs`` order),
    #: so that the service records them without reading its own files back
    sr_uid: str | None = None
    pr_uids: tuple[str, ...] = ()

    def moved(self, old: Path, new: Path) -> DicomOutputs:
        """The same outputs after their folder ``old`` was renamed ``new``."""
        def at(path: Path | None) -> Path | None:
            return new / path.relative_to(old) if path is not None else None
        return replace(self, sr=at(self.sr), pr=at(self.pr), prs=tuple(new / p.relative_to(old) for p in self.prs))


def study_headers(study: Study) -> tuple[list[Dataset], list[Dataset]]:
    """Pixel-free headers of the study's decoded images and of its failed inputs that are DICOM
    image objects (only images may be referenced as images; anything else stays in findings.json)."""
    images = [image.header for image in study.images if image.header is not None]
    failed = [f.header for f in study.failures
              if f.header is not None and "SOPInstanceUID" in f.header and is_image_object(f.header)]
    return images, failed


def write_dicom_outputs(
    findings: StudyResult, study: Study, folder: Path, previous_srs: Sequence[Dataset] = (), result_number: int = 1,
) -> DicomOutputs:
    """Write the SR (always, when any instance of the study is identifiable) and the GSPS (when
    at least one image was analysed; one per image size). ``previous_srs`` are this device's
    earlier SRs of the study that the new one supersedes; ``result_number`` counts this
    study's results (its presentation states are labelled with it, RC-034)."""
    from cad.report.gsps import build_presentation_state
    from cad.report.sr.build import build_mammography_cad_sr

    images, failed = study_headers(study)
    if any(f.code is IngestErrorCode.PATIENT_MISMATCH for f in study.failures):
        # an SR copies one patient's identity; it must not reference another patient's images
        raise ValueError("the study's images name different patients: no SR or presentation state is written")
    if not images and not failed:
        log.warning("no DICOM instance of study %s could be identified: no SR written",
                    uid_tail(findings.study_instance_uid))
        return DicomOutputs(None, None)
    variant = findings.algorithm.runtime_variant
    uids = output_uids(
        findings.study_instance_uid,
        [str(h.SOPInstanceUID) for h in images + failed],
        # a runtime variant gives other results, so other objects (the reference keeps its UIDs)
        findings.algorithm.model_sha256 + (f"+{variant}" if variant else ""),
        findings.algorithm.settings_sha256,
    )
    folder.mkdir(parents=True, exist_ok=True)
    created = creation_instant()
    sr = build_mammography_cad_sr(findings, images, failed, uids, previous_srs)
    stamp_creation(sr, created)
    sr_path = folder / SR_NAME
    sr.save_as(sr_path, enforce_file_format=True)
    analysed = {i.sop_instance_uid for i in findings.images if i.analysed}
    shown = [h for h in images if str(h.SOPInstanceUID) in analysed]
    sr_uid = str(sr.SOPInstanceUID)
    if not shown:
        return DicomOutputs(sr_path, None, "no image was analysed", sr_uid=sr_uid)
    # highdicom writes one Displayed Area for all images of a GSPS, so views stored at different
    # sizes (e.g. CC and MLO in different detector formats) get one presentation state per size,
    # in one series: cad-pr.dcm when there is one size, else cad-pr-1.dcm, cad-pr-2.dcm, ...
    sizes = sorted({(int(h.Rows), int(h.Columns)) for h in shown})
    paths: list[Path] = []
    pr_uids: list[str] = []
    for number, size in enumerate(sizes, start=1):
        group = [h for h in shown if (int(h.Rows), int(h.Columns)) == size]
        group_uids = dict(uids)
        if len(sizes) > 1:
            group_uids["pr_instance"] = derived_uid("cad-pr-instance", [uids["pr_instance"], f"{size[0]}x{size[1]}"])
        try:
            pr = build_presentation_state(findings, group, group_uids, instance_number=number,
                                          result_number=result_number)
        except ValueError as exc:
            log.warning("presentation state not written for study %s: %s", uid_tail(findings.study_instance_uid), exc)
            return DicomOutputs(sr_path, paths[0] if paths else None, str(exc), tuple(paths), sr_uid, tuple(pr_uids))
        stamp_creation(pr, created)
        path = folder / (PR_NAME if len(sizes) == 1 else f"cad-pr-{number}.dcm")
        pr.save_as(path, enforce_file_format=True)
        paths.append(path)
        pr_uids.append(str(pr.SOPInstanceUID))
    return DicomOutputs(sr_path, paths[0], None, tuple(paths), sr_uid, tuple(pr_uids))
