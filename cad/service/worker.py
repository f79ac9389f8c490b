"""Runs one queued job: fetch its images, analyse them with the locked core, deliver the SR and
presentation states, and finish the job with its audit record.

A study in which no image can be analysed ends ``failed`` with the reasons, and its SR (which
lists every image as not analysed, with why) is still delivered. PACS errors are transient:
the job goes back to the queue with backoff. Outputs that cannot be stored (no space left) keep
the job waiting, without using up its attempts, until they can.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pydicom.dataset import Dataset

import cad
from cad.detect.locked import LockedModel, sha256_file
from cad.detect.runtime import Runtime
from cad.io import atomic, load
from cad.io.dicomweb import PacsError
from cad.io.uids import uid_tail
from cad.job import OutputsNotWritten, StudyOutcome, StudyState, run_studies
from cad.result.findings_json import FINDINGS_FILE
from cad.service import drift, input_drift
from cad.service.metrics import ServiceMetrics
from cad.service.queue import DONE, FAILED, Job, JobQueue
from cad.service.sources import Destination
from cad.stages import Stage, StageClock

log = logging.getLogger(__name__)


class Source(Protocol):
    name: str

    def poll(self, queue: JobQueue) -> int: ...

    def fetch(self, job: Job, folder: Path) -> list[Path]: ...


@dataclass
class Worker:
    """Everything a job needs: the verified model and runtime, the queue, the folders."""

    model: LockedModel
    runtime: Runtime
    queue: JobQueue
    state: Path
    sources: dict[str, Source]
    destination: Destination | None = None
    #: where the results of a job are written, by source (default: state/results/<job id>)
    results_in: dict[str, Any] | None = None
    overlays: bool = False
    #: counters and histograms of finished jobs (/metrics); None: not counted
    metrics: ServiceMetrics | None = None
    #: why the last job's outputs could not be stored (no space left...), until a job's are again:
    #: the readiness check ``outputs_writable`` (an alert while it lasts)
    storage_problem: str | None = None
    #: studies finished in this process whose results are incomplete (some images not analysed)
    incomplete: int = 0
    _last_record: dict[int, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    def results_folder(self, job: Job) -> Path:
        finder = (self.results_in or {}).get(job.source)
        return Path(finder(job)) if finder else self.state / "results" / str(job.id)

    def _previous_sr(self, job: Job) -> list[Dataset]:
        earlier = self.queue.latest_done(job.study_uid, job.id)
        path = (earlier.outputs or {}).get("sr_path") if earlier else None
        if path and Path(path).is_file():
            return [pydicom.dcmread(path)]
        return []

    def process(self, job: Job) -> Job:
        """Run ``job`` to its end state (or back to the queue after a PACS error), counted in the
        metrics when it ends."""
        clock = StageClock()
        finished = self._process(job, clock)
        if self.metrics is not None and finished.state in (DONE, FAILED):
            last = self._last_record.get(finished.id, {})
            self.metrics.job_finished(finished.state, last, clock)
        self._last_record.pop(finished.id, None)
        return finished

    def _process(self, job: Job, clock: StageClock) -> Job:
        started = time.time()
        base = self._record(job)
        source = self.sources.get(job.source)
        work = self.state / "work" / str(job.id)
        reason: str | None
        try:
            if source is None:
                return self.queue.finish(job, FAILED, {**base, "event": "analysis"},
                                         reason=f"source {job.source!r} is not configured in this service")
            paths = source.fetch(job, work)
            outcome = self._analyse(job, paths, clock)
            if outcome.dicom is None:  # the SR could not be built: never "done" without it
                reason = outcome.dicom_error or "DICOM outputs not written"
                log.error("study %s: %s; will retry", uid_tail(job.study_uid), reason)
                return self.queue.retry_later(job, reason, {**base, "event": "analysis"})
            outputs = self._outputs(outcome)
            if self.destination is not None and outputs["delivered"]:
                self.destination.deliver([Path(p) for p in outputs["delivered"]])
                outputs["delivered_to"] = self.destination.name
        except PacsError as exc:
            log.warning("study %s: %s; will retry", uid_tail(job.study_uid), exc)
            return self.queue.retry_later(job, str(exc), {**base, "event": "analysis"})
        except OutputsNotWritten as exc:  # the machine's condition: the job waits for it to change
            return self._wait_for_storage(job, atomic.describe(exc.error))
        except Exception as exc:  # a defect must not stop the service; the job records it
            log.error("study %s: internal error (%s)", uid_tail(job.study_uid), type(exc).__name__, exc_info=True)
            return self.queue.finish(job, FAILED, {**base, "event": "analysis"},
                                     reason=f"internal error: {type(exc).__name__}")
        finally:
            if job.source == "dicomweb":  # fetched copies; other sources' files stay where they are
                shutil.rmtree(work, ignore_errors=True)
        self.storage_problem = None
        result = outcome.result
        analysed = outcome.images_analysed
        # the one rule of `cad detect` and `cad batch` (cad.job.StudyState); an incomplete study is
        # done, its reason says what was not analysed
        state = FAILED if outcome.state is StudyState.FAILED else DONE
        reason = outcome.reason
        self.incomplete += outcome.state is StudyState.INCOMPLETE
        marks = result.marks
        record = {
            **base, "event": "analysis", "status": state, "result": outcome.state.value,
            "images_analysed": analysed, "images_not_analysed": outcome.images_not_analysed,
            "not_analysed_reasons": outcome.not_analysed_reasons,
            "findings": len(result.findings), "marks_at_operating_point": len(marks),
            "outputs": {k: v for k, v in outputs.items() if k != "delivered"},
            "seconds": round(time.time() - started, 3),
            "queue_latency_s": round(started - job.enqueued, 3),
        }
        self._last_record[job.id] = record
        finished = time.time()
        drift.record(self.queue.db, job.id, job.study_uid, finished, drift.OutputFacts.of(result, record["seconds"]),
                     drift.marks_by_side(result))
        input_drift.record(self.queue.db, job.id, finished, list(outcome.views))
        if reason:
            log.warning("study %s: %s", uid_tail(job.study_uid), reason)
            for line in outcome.problems:
                log.warning("study %s: %s", uid_tail(job.study_uid), line)
        else:
            log.info("study %s: analysed %d images, %d marks", uid_tail(job.study_uid), analysed, len(marks))
        return self.queue.finish(job, state, record, outputs=outputs, reason=reason)

    def _wait_for_storage(self, job: Job, problem: str) -> Job:
        """Outputs that cannot be stored (no space left...): the job is kept and tried again after
        the backoff without using up its attempts, and the service is not ready until outputs
        are stored again; nothing already done is touched."""
        self.storage_problem = f"outputs cannot be stored: {problem}"
        log.error("study %s: %s; the job waits and is tried again", uid_tail(job.study_uid), self.storage_problem)
        return self.queue.wait(job, self.storage_problem)

    def _analyse(self, job: Job, paths: list[Path], clock: StageClock) -> StudyOutcome:
        with clock.stage(Stage.DECODE):
            studies = [s for s in load(paths).studies if s.study_instance_uid == job.study_uid]
        if not studies:
            raise ValueError("none of the job's files belongs to its study")
        out = self.results_folder(job)
        previous = {job.study_uid: self._previous_sr(job)}
        number = {job.study_uid: self.queue.results_before(job.study_uid, job.id) + 1}
        (outcome,) = run_studies(studies, self.model, self.runtime, out, self.overlays, clock, previous_srs=previous,
                                 result_numbers=number)
        return outcome

    def _outputs(self, outcome: StudyOutcome) -> dict[str, Any]:
        folder = outcome.folder
        findings = folder / FINDINGS_FILE
        result: dict[str, Any] = {"folder": str(folder), "findings_sha256": sha256_file(findings), "delivered": []}
        dicom = outcome.dicom
        if dicom is not None and dicom.sr is not None:
            result.update({"sr_path": str(dicom.sr), "sr_sop_instance_uid": dicom.sr_uid,
                           "sr_sha256": sha256_file(dicom.sr)})
            result["delivered"].append(str(dicom.sr))
        prs = list(dicom.prs) if dicom is not None else []
        uids = list(dicom.pr_uids) if dicom is not None else []
        result["presentation_states"] = [{"sop_instance_uid": uid, "sha256": sha256_file(p)} for p, uid in zip(prs, uids)]
        result["delivered"] += [str(p) for p in prs]
        if outcome.problems:
            result["problems"] = [problem.text for problem in outcome.problems]
        return result

    def _record(self, job: Job) -> dict[str, Any]:
        """What every audit record of a job states: inputs, model, algorithm, runtime."""
        return {
            "study_uid": job.study_uid, "source": job.source, "attempt": job.attempts,
            "instances": sorted(i.sop_uid for i in job.instances), "instances_sha256": job.instances_sha256,
            "model": {"name": self.model.name, "sha256": self.model.sha256,
                      "settings_sha256": self.model.settings_sha256},
            "algorithm": {"name": cad.ALGORITHM_NAME, "version": cad.__version__},
            "runtime": self.runtime.name,
        }
