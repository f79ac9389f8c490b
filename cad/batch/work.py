"""What a batch worker does with one study: exactly what `cad detect` does, written atomically.

Each worker process verifies and loads the locked model once (:func:`start_worker`) and keeps
it. A study's outputs are written into a private temporary folder together with
``batch-record.json`` (the instance set and the facts of the run), then moved to
``<out>/<StudyInstanceUID>/`` in one rename: a study folder is complete or absent. A study in
which no image can be analysed still gets its findings.json and SR (as `cad detect` writes
them) and is recorded failed with the reason; an unexpected exception is an internal error with
its traceback in the log, never a clinical statement.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from cad.batch.discover import StudyWork
from cad.batch.ledger import DONE, FAILED, Outcome
from cad.detect.locked import LockedModel, load_locked_model
from cad.detect.runtime import Runtime, make_runtime
from cad.io import atomic, load
from cad.io.dicomweb import DicomWeb, PacsError, RemoteInstance
from cad.io.uids import uid_tail
from cad.job import NOT_ANALYSED, OutputsNotWritten, StudyState, run_studies
from cad.stages import Stage, StageClock

log = logging.getLogger(__name__)

RECORD_FILE = "batch-record.json"
PARTIAL = ".partial"
_worker: dict[str, Any] = {}


def start_worker(model_dir: str | None, runtime_name: str = "", dicomweb: str | None = None,
                 dicomweb_auth: str | None = None) -> dict[str, str]:
    """Verify and load the locked model and open its runtime in this process (once); with
    ``dicomweb``, a client of that PACS for fetching studies (``dicomweb_auth``: its
    Authorization header value)."""
    key = (model_dir, runtime_name)
    if _worker.get("key") != key:
        model = load_locked_model(Path(model_dir) if model_dir else None)
        runtime = make_runtime(model, runtime_name) if runtime_name else make_runtime(model)
        _worker.update(key=key, model=model, runtime=runtime)
    if dicomweb and getattr(_worker.get("web"), "url", None) != dicomweb.rstrip("/"):
        _worker["web"] = DicomWeb(dicomweb, headers={"Authorization": dicomweb_auth} if dicomweb_auth else None)
    model = _worker["model"]
    return {"model": model.name, "model_sha256": model.sha256, "runtime": _worker["runtime"].name, "pid": str(os.getpid())}


def committed(out: Path, work: StudyWork) -> dict[str, Any] | None:
    """The record of a study folder already in place for this instance set (None: not done)."""
    path = out / work.study_uid / RECORD_FILE
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("instances_sha256") == work.instances_sha256 else None


def _fetch(work: StudyWork, folder: Path) -> list[Path]:
    """WADO-RS the study's instances into ``folder`` (the worker's private folder)."""
    web: DicomWeb | None = _worker.get("web")
    if web is None:
        raise PacsError("DICOMweb: this worker was started without a PACS")
    folder.mkdir(parents=True, exist_ok=True)
    return [web.retrieve(work.study_uid, RemoteInstance(series, sop), folder)
            for series, sop in zip(work.series_uids, work.sop_uids, strict=True)]


def analyse(work: StudyWork, out: Path, overlays: bool = True) -> Outcome:
    """Analyse one study in this worker and move its outputs into place."""
    model: LockedModel = _worker["model"]
    runtime: Runtime = _worker["runtime"]
    clock = StageClock()
    began = time.perf_counter()
    partial = out / PARTIAL / f"{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        files, fetch_s = [Path(f) for f in work.files], 0.0
        if work.remote:
            try:
                files = _fetch(work, partial / "fetched")
                fetch_s = time.perf_counter() - began
            except PacsError as exc:
                return Outcome.failed(work, f"not analysed: {exc}", time.perf_counter() - began)
        with clock.stage(Stage.DECODE):
            ingest = load(files)
        studies = [s for s in ingest.studies if s.study_instance_uid == work.study_uid]
        if not studies:
            reasons = sorted({f.message for f in ingest.unassigned_failures}) or ["no file could be read"]
            return Outcome.failed(work, "not analysed: " + "; ".join(reasons)[:300], time.perf_counter() - began)
        (outcome,) = run_studies(studies, model, runtime, partial, overlays, clock)
        # the one rule of `cad detect` and `cad serve` (cad.job.StudyState): an incomplete study is
        # done (analysing it again would not change it) and says what was not analysed
        state = FAILED if outcome.state is StudyState.FAILED else DONE
        reason = outcome.reason[:300] if outcome.reason else None
        record = {
            "study_uid": work.study_uid, "instances_sha256": work.instances_sha256, "state": state, "reason": reason,
            "result": outcome.state.value, "files": len(work.files), "images_analysed": outcome.images_analysed,
            "images_not_analysed": outcome.images_not_analysed,
            "not_analysed": [problem.text for problem in outcome.problems if problem.kind == NOT_ANALYSED],
            "marks": len(outcome.result.marks), "model_sha256": model.sha256, "runtime": runtime.name,
            # WADO-RS time of a study on a PACS is its own stage ahead of decoding
            "stage_seconds": {k: round(v, 4) for k, v in clock.as_dict().items()} | (
                {"fetch": round(fetch_s, 4)} if work.remote else {}),
            "seconds": round(time.perf_counter() - began, 3), "worker_pid": os.getpid(),
            # the worker process's peak resident memory so far (Linux reports KiB)
            "worker_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        folder = partial / work.study_uid
        (folder / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        # the commit: the study folder is complete or absent (an earlier instance set's is replaced)
        atomic.commit_folder(folder, out / work.study_uid)
        return Outcome(work.study_uid, work.instances_sha256, state, reason, record)
    except OutputsNotWritten as exc:  # the disk, not the study: the driver stops the run
        return Outcome.failed(work, f"outputs not written: {atomic.describe(exc.error)}", time.perf_counter() - began,
                              environment=True)
    except Exception as exc:  # a defect in one study must not stop the run; it is recorded
        if atomic.is_environment_error(exc):  # the study's record or its move into place: the disk again
            return Outcome.failed(work, f"outputs not written: {atomic.describe(exc)}", time.perf_counter() - began,
                                  environment=True)
        log.error("study %s: internal error (%s)", uid_tail(work.study_uid), type(exc).__name__, exc_info=True)
        return Outcome.failed(work, f"internal error: {type(exc).__name__}", time.perf_counter() - began)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
