"""One study's analysis job, from decoded images to every output file.

The locked core (:mod:`cad.analysis.pipeline`) gives findings; this module writes them where a
site reads them: ``findings.json``, the Mammography CAD SR and presentation state(s), and
(optionally) overlay PNGs, in ``<out>/<StudyInstanceUID>/``. `cad detect`, `cad bench` and the
PACS service run exactly this, so what is timed is what runs.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from cad.analysis.pipeline import AnalysedView, analyse_studies
from cad.detect.locked import LockedModel
from cad.detect.runtime import Runtime, default_threads
from cad.errors import EnvironmentProblem
from cad.io import atomic
from cad.io.image import IngestFailure, IngestResult, Study
from cad.io.uids import uid_tail
from cad.report.outputs import DicomOutputs, write_dicom_outputs
from cad.result.findings_json import FINDINGS_FILE, write_result
from cad.result.model import StudyResult
from cad.stages import NO_CLOCK, Stage, StageClock

OVERLAY_FOLDER = "overlays"


@dataclass(frozen=True)
class Problem:
    """One thing to tell a person about a study's job: its ``kind`` (``error``, ``warning``,
    ``not analysed``) and its text (naming the file or study, never a patient). ``str()`` is the
    console's one line."""

    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}"


NOT_ANALYSED = "not analysed"


class StudyState(str, enum.Enum):
    """How one study's analysis ended: the one rule `cad detect`, `cad batch` and `cad serve` share."""

    #: every image analysed, every output written
    DONE = "done"
    #: outputs written, but some images were not analysed (each named with why): not a full result
    INCOMPLETE = "incomplete"
    #: no image could be analysed, or the DICOM outputs could not be written
    FAILED = "failed"


@dataclass(frozen=True)
class StudyOutcome:
    """What one study's job produced, and the problems to report (one line each, no PHI)."""

    result: StudyResult
    folder: Path
    dicom: DicomOutputs | None
    overlays: tuple[Path, ...]
    problems: tuple[Problem, ...]
    #: why the DICOM outputs could not be written (``dicom`` is then None)
    dicom_error: str | None = None
    #: the analysed views (model inputs and detections), for the service's input monitoring
    views: tuple[AnalysedView, ...] = ()

    @property
    def images_analysed(self) -> int:
        return self.result.images_analysed

    @property
    def images_not_analysed(self) -> int:
        return len(self.result.images) - self.result.images_analysed

    @property
    def not_analysed_reasons(self) -> list[str]:
        """The distinct reasons images of the study were not analysed, sorted."""
        return sorted({i.reason or "unknown" for i in self.result.images if not i.analysed})

    @property
    def state(self) -> StudyState:
        if not self.images_analysed or self.dicom is None:
            return StudyState.FAILED
        return StudyState.INCOMPLETE if self.images_not_analysed else StudyState.DONE

    @property
    def reason(self) -> str | None:
        """Why the study failed or is incomplete (one line, no PHI); None when done."""
        if not self.images_analysed:
            return "no image could be analysed: " + "; ".join(self.not_analysed_reasons)
        if self.dicom is None:
            return self.dicom_error or "DICOM outputs not written"
        if self.images_not_analysed:
            count = self.images_not_analysed
            return f"{count} image{'s' if count != 1 else ''} not analysed: " + "; ".join(self.not_analysed_reasons)
        return None

    def dicom_summary(self) -> str:
        """``SR+GSPS``, ``SR``, ``none`` or ``failed``: which DICOM objects were written."""
        if self.dicom is None:
            return "failed"
        return "+".join(name for name, path in (("SR", self.dicom.sr), ("GSPS", self.dicom.pr)) if path) or "none"


class OutputsNotWritten(EnvironmentProblem):
    """A study's outputs could not be stored (no space left, a read-only or forbidden folder):
    the machine's condition, not a defect and not a clinical statement. Nothing of the study was
    left behind, and an earlier result in its place is unchanged."""

    def __init__(self, folder: Path, error: OSError) -> None:
        self.folder, self.error = folder, error
        self.no_space = error.errno in atomic.NO_SPACE_ERRNOS
        super().__init__(f"{folder}: {atomic.describe(error)}: the study's outputs were not written "
                         "(none of them was left behind)")


def write_study_outputs(
    result: StudyResult, views: list[AnalysedView], study: Study, folder: Path,
    overlays: bool = True, clock: StageClock = NO_CLOCK, previous_srs: Sequence[Dataset] = (),
    result_number: int = 1,
) -> StudyOutcome:
    """findings.json, SR, presentation state(s) and, if asked, overlays of one analysed study.

    The study's folder appears complete or not at all: its files are written beside it and the
    folder is renamed into place. A DICOM object that cannot be built is reported as a problem
    (findings.json is written first, so that never loses the findings); a file system that
    cannot take the outputs raises :class:`OutputsNotWritten`.
    """
    from cad.report.overlays import write_overlays

    problems: list[Problem] = []
    tag = f"study {uid_tail(study.study_instance_uid)}"
    with clock.stage(Stage.OUTPUTS):
        try:
            staging = atomic.staging_folder(folder)
        except OSError as exc:
            raise OutputsNotWritten(folder, exc) from None
        try:
            write_result(result, staging / FINDINGS_FILE)
            written = tuple(write_overlays(result, views, staging / OVERLAY_FOLDER)) if overlays else ()
            dicom: DicomOutputs | None
            dicom_error: str | None = None
            try:
                dicom = write_dicom_outputs(result, study, staging, previous_srs, result_number)
                if dicom.pr_problem and dicom.sr:
                    problems.append(Problem("warning", f"{tag}: no presentation state: {dicom.pr_problem}"))
            except ValueError as exc:
                dicom, dicom_error = None, f"DICOM outputs not written: {exc}"
                problems.append(Problem("error", f"{tag}: {dicom_error}"))
            atomic.commit_folder(staging, folder)
        except OSError as exc:
            atomic.discard(staging)
            raise OutputsNotWritten(folder, exc) from None
    problems += not_analysed_lines(result, study)
    return StudyOutcome(result, folder, dicom.moved(staging, folder) if dicom else None,
                        tuple(folder / p.relative_to(staging) for p in written), tuple(problems), dicom_error,
                        tuple(views))


def not_analysed_lines(result: StudyResult, study: Study) -> list[Problem]:
    """One per image of the study that was not analysed, naming its file as the user gave it
    (findings.json keeps only the file name: in an archive every exam has an R_CC.dcm)."""
    paths = {image.sop_instance_uid: image.path for image in study.images}
    lines = [Problem(NOT_ANALYSED, f"{failure.ref.path}: {failure.message}") for failure in study.failures]
    return lines + [Problem(NOT_ANALYSED, f"{paths.get(image.sop_instance_uid or '', image.file)}: {image.reason}")
                    for image in result.images if not image.analysed and image.error_code is None]


def run_studies(
    studies: list[Study], model: LockedModel, runtime: Runtime, out: Path,
    overlays: bool = True, clock: StageClock = NO_CLOCK,
    previous_srs: Mapping[str, Sequence[Dataset]] | None = None,
    result_numbers: Mapping[str, int] | None = None,
) -> list[StudyOutcome]:
    """Analyse ``studies`` together (their views share runtime batches) and write each one's
    outputs to ``out/<StudyInstanceUID>/``; ``previous_srs`` maps a study to the earlier SRs
    its new SR supersedes, ``result_numbers`` to the number of its new result (1 when absent)."""
    results = analyse_studies(studies, model, runtime, clock)
    earlier, numbers = previous_srs or {}, result_numbers or {}
    return [write_study_outputs(result, views, study, out / study.study_instance_uid, overlays, clock,
                                earlier.get(study.study_instance_uid, ()), numbers.get(study.study_instance_uid, 1))
            for study, (result, views) in zip(studies, results)]


NOT_ANALYSED_FILE = "not_analysed.json"


def not_in_any_study(result: IngestResult) -> list[IngestFailure]:
    """The input files no study's outputs list: files that are not DICOM (which might have been
    mammograms) and DICOM objects that are not mammograms (never part of an exam)."""
    return [*result.unassigned_failures, *result.not_mammograms]
RUN_FILE = "detect_run.json"


@dataclass
class DetectRun:
    """`cad detect` over ingested inputs: studies in groups of ``batch_exams`` (their views share
    runtime batches), each study's outputs as it is done, then the run's own files:
    ``not_analysed.json`` (files no study could claim) and ``detect_run.json`` (timing)."""

    model: LockedModel
    runtime: Runtime
    out: Path
    overlays: bool = True
    batch_exams: int = 1
    clock: StageClock = field(default_factory=StageClock)
    outcomes: list[StudyOutcome] = field(default_factory=list)
    #: the timing written to ``detect_run.json`` (after :meth:`run`)
    summary: dict[str, Any] = field(default_factory=dict)

    def run(self, result: IngestResult, started: tuple[float, float]) -> Iterator[StudyOutcome]:
        """Analyse every study of ``result``, yielding each outcome; ``started`` is the
        (wall, CPU) clock reading taken before ingest, so timing covers ingest to outputs."""
        for first in range(0, len(result.studies), self.batch_exams):
            group = result.studies[first:first + self.batch_exams]
            for outcome in run_studies(group, self.model, self.runtime, self.out, self.overlays, self.clock):
                self.outcomes.append(outcome)
                yield outcome
        files = not_in_any_study(result)
        try:
            if files:
                records = [{"file": str(f.ref.path), "reason": f.message, "code": f.code.value} for f in files]
                atomic.write_text(self.out / NOT_ANALYSED_FILE, json.dumps(records, indent=2, sort_keys=True) + "\n")
            if result.studies:
                self._write_summary(len(result.studies), started)
        except OSError as exc:
            raise OutputsNotWritten(self.out, exc) from None

    @property
    def images_analysed(self) -> int:
        return sum(o.images_analysed for o in self.outcomes)

    @property
    def dicom_failed(self) -> int:
        return sum(o.dicom is None for o in self.outcomes)

    def _write_summary(self, studies: int, started: tuple[float, float]) -> None:
        wall_s = (time.perf_counter() - started[0]) / studies
        cpu_s = (time.process_time() - started[1]) / studies
        self.summary = {
            "studies": studies, "images_analysed": self.images_analysed,
            "mean_wall_seconds_per_study": round(wall_s, 3),
            "mean_cpu_seconds_per_study": round(cpu_s, 3),
            "stage_seconds_per_study": {k: round(v / studies, 4) for k, v in self.clock.as_dict().items()},
            "threads": default_threads(), "model_sha256": self.model.sha256, "runtime": self.runtime.name,
            "batch_exams": self.batch_exams,
            "note": "timing of this run (not part of findings.json, which is deterministic)",
        }
        atomic.write_text(self.out / RUN_FILE, json.dumps(self.summary, indent=2, sort_keys=True) + "\n")
