"""The driver of `cad batch`: discover, plan against the ledger, run on an engine, report."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cad.batch.discover import Archive, StudyWork
from cad.batch.ledger import DONE, PENDING, Ledger, Outcome
from cad.batch.work import PARTIAL, committed
from cad.io import atomic

REPORT_FILE = "batch-report.json"


@dataclass
class BatchReport:
    """What a run did: the figures of batch-report.json."""

    engine: str
    workers: int
    discovered: int = 0
    skipped_done: int = 0
    recovered: int = 0
    done: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    #: studies done with some images not analysed (study UID, reason)
    incomplete: list[tuple[str, str]] = field(default_factory=list)
    not_mammograms: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    wall_s: float = 0.0
    discover_s: float = 0.0
    stage_s: Counter[str] = field(default_factory=Counter)
    study_s: float = 0.0
    peak_rss_mb: float = 0.0
    #: why the run stopped before its end (the machine could not store the outputs)
    stopped: str | None = None

    def as_dict(self, ledger: Ledger) -> dict[str, Any]:
        analysed = self.done + sum(self.failed.values())
        return {
            "engine": self.engine, "workers": self.workers, "studies_discovered": self.discovered,
            "studies_done_this_run": self.done, "studies_failed_this_run": sum(self.failed.values()),
            "failed_by_reason": dict(self.failed), "skipped_already_done": self.skipped_done,
            "recovered_from_an_interrupted_run": self.recovered,
            "studies_incomplete_this_run": len(self.incomplete),
            "incomplete_studies": [{"study_uid": u, "reason": r} for u, r in self.incomplete],
            "incomplete_in_ledger": len(ledger.incomplete()),
            "files_not_mammograms": [{"file": f, "reason": r} for f, r in self.not_mammograms],
            "files_not_analysed": [{"file": f, "reason": r} for f, r in self.unreadable],
            "ledger": ledger.counts(),
            "wall_seconds": round(self.wall_s, 2), "discover_seconds": round(self.discover_s, 2),
            "studies_per_hour": round(3600 * analysed / self.wall_s, 1) if self.wall_s and analysed else None,
            "worker_seconds_per_study": round(self.study_s / analysed, 3) if analysed else None,
            "stage_seconds_per_study": {k: round(v / analysed, 4) for k, v in self.stage_s.items()} if analysed else {},
            "worker_peak_rss_mb": self.peak_rss_mb or None,
            "stopped": self.stopped,
        }


def run_batch(find: Callable[[], Archive], out: Path, engine: Any,
              progress: Callable[[int, int, Outcome | None], None], retry_failed: bool = True) -> dict[str, Any]:
    """Analyse every study ``find()`` discovers that is not already done in ``out``'s ledger."""
    began = time.perf_counter()
    ledger = Ledger(out)  # also locks the folder: one driver per output folder
    shutil.rmtree(out / PARTIAL, ignore_errors=True)  # what workers of a killed run left half-written
    report = BatchReport(engine.name, engine.config.workers)
    try:
        archive = find()
        report.discover_s = time.perf_counter() - began
        report.discovered, report.not_mammograms, report.unreadable = (len(archive.studies), archive.skipped,
                                                                      archive.unreadable)
        todo, report.skipped_done = ledger.plan(archive.studies, retry_failed)
        ready: list[StudyWork] = []
        for work in todo:  # outputs moved into place before a kill stopped the ledger: done, not redone
            record = committed(out, work)
            if record is not None:
                ledger.record(Outcome(work.study_uid, work.instances_sha256, record.get("state", DONE),
                                      record.get("reason"), record), 0)
                report.recovered += 1
            else:
                ready.append(work)
        total = len(ready)
        progress(0, total, None)
        finished = 0
        for outcome, attempts in engine.run(ready):
            ledger.record(outcome, attempts)
            finished += 1
            if outcome.state == DONE:
                report.done += 1
                if outcome.reason:  # done, but not every image analysed (cad.job.StudyState.INCOMPLETE)
                    report.incomplete.append((outcome.study_uid, outcome.reason))
            else:
                report.failed[outcome.reason or "unknown"] += 1
            report.study_s += float(outcome.record.get("seconds", 0.0))
            report.stage_s.update(outcome.record.get("stage_seconds", {}))
            report.peak_rss_mb = max(report.peak_rss_mb, float(outcome.record.get("worker_peak_rss_mb", 0.0)))
            progress(finished, total, outcome)
            if outcome.environment:  # every study after it would fail the same way: stop, resumable
                report.stopped = outcome.reason
                break
        report.wall_s = time.perf_counter() - began
        summary = report.as_dict(ledger)
        summary["pending_left"] = ledger.counts()[PENDING]
        atomic.write_text(out / REPORT_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return summary
    finally:
        ledger.close()
