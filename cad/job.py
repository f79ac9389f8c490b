"""One study's analysis job, from decoded images to every output file.

The locked core (:mod:`cad.detect.pipeline`) gives findings; this module writes them where a
site reads them: ``findings.json``, the Mammography CAD SR and presentation state(s), and
(optionally) overlay PNGs, in ``<out>/<StudyInstanceUID>/``. `cad detect`, `cad bench` and the
PACS service run exactly this, so what is timed is what runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from cad.detect.findings import ANALYZED, StudyFindings
from cad.detect.locked import LockedModel
from cad.detect.pipeline import AnalysedView, analyse_studies
from cad.detect.runtime import Runtime
from cad.io.image import Study
from cad.io.outputs import DicomOutputs, write_dicom_outputs
from cad.io.uids import uid_tail
from cad.stages import NO_CLOCK, Stage, StageClock

FINDINGS_FILE = "findings.json"
OVERLAY_FOLDER = "overlays"


@dataclass(frozen=True)
class StudyOutcome:
    """What one study's job produced, and the problems to report (one line each, no PHI)."""

    findings: StudyFindings
    folder: Path
    dicom: DicomOutputs | None
    overlays: tuple[Path, ...]
    problems: tuple[str, ...]
    #: why the DICOM outputs could not be written (``dicom`` is then None)
    dicom_error: str | None = None

    @property
    def images_analysed(self) -> int:
        return sum(image.status == ANALYZED for image in self.findings.images)

    def dicom_summary(self) -> str:
        """``SR+GSPS``, ``SR``, ``none`` or ``failed``: which DICOM objects were written."""
        if self.dicom is None:
            return "failed"
        return "+".join(name for name, path in (("SR", self.dicom.sr), ("GSPS", self.dicom.pr)) if path) or "none"


def write_study_outputs(
    findings: StudyFindings, views: list[AnalysedView], study: Study, folder: Path,
    overlays: bool = True, clock: StageClock = NO_CLOCK, previous_srs: Sequence[Dataset] = (),
) -> StudyOutcome:
    """findings.json, SR, presentation state(s) and, if asked, overlays of one analysed study.

    A DICOM object that cannot be built is reported as a problem; findings.json is always
    written first, so a failure there never loses the findings.
    """
    from cad.detect.overlays import write_overlays

    problems: list[str] = []
    tag = f"study {uid_tail(study.study_instance_uid)}"
    with clock.stage(Stage.OUTPUTS):
        findings.write(folder / FINDINGS_FILE)
        written = tuple(write_overlays(findings, views, folder / OVERLAY_FOLDER)) if overlays else ()
        dicom: DicomOutputs | None
        dicom_error: str | None = None
        try:
            dicom = write_dicom_outputs(findings, study, folder, previous_srs)
            if dicom.pr_problem and dicom.sr:
                problems.append(f"warning: {tag}: no presentation state: {dicom.pr_problem}")
        except ValueError as exc:
            dicom, dicom_error = None, f"DICOM outputs not written: {exc}"
            problems.append(f"error: {tag}: {dicom_error}")
    for image in findings.images:
        if image.status != ANALYZED:
            problems.append(f"error: {image.file}: not analysed: {image.reason}")
    return StudyOutcome(findings, folder, dicom, written, tuple(problems), dicom_error)


def run_studies(
    studies: list[Study], model: LockedModel, runtime: Runtime | None, out: Path,
    overlays: bool = True, clock: StageClock = NO_CLOCK,
    previous_srs: Mapping[str, Sequence[Dataset]] | None = None,
) -> list[StudyOutcome]:
    """Analyse ``studies`` together (their views share runtime batches) and write each one's
    outputs to ``out/<StudyInstanceUID>/``; ``previous_srs`` maps a study to the earlier SRs
    its new SR supersedes."""
    results = analyse_studies(studies, model, runtime, clock)
    earlier = previous_srs or {}
    return [write_study_outputs(findings, views, study, out / study.study_instance_uid, overlays, clock,
                                earlier.get(study.study_instance_uid, ()))
            for study, (findings, views) in zip(studies, results)]
