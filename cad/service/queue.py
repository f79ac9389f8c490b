"""Durable job queue: each (study, set of its MG instances) is analysed exactly once.

A job is identified by the StudyInstanceUID and the SHA-256 of its sorted SOP Instance UIDs, so
finding the same study again enqueues nothing, and a study that gains images gets a new job
whose result supersedes the old one. States: ``pending`` -> ``running`` -> ``done`` | ``failed``
(| ``superseded``). Every transition is one SQLite transaction; finishing a job and appending its
audit record are the same transaction.

Crash recovery: a job found ``running`` at start-up belonged to a killed process (the state
folder is locked to one process) and goes back to ``pending``; its outputs are rebuilt with the
same deterministic UIDs, so storing them again is idempotent at the PACS.

PACS errors are retried with exponential backoff; a job that keeps failing ends ``failed``
with the reason.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cad.io.uids import instance_set_sha256, uid_tail
from cad.service import audit

PENDING, RUNNING, DONE, FAILED, SUPERSEDED = "pending", "running", "done", "failed", "superseded"
#: a job waiting for the machine (no space left) is tried again after the backoff of this many
#: attempts (16 s with the default policy): seldom enough not to analyse it over and over
WAIT_ATTEMPTS = 4
STATES = (PENDING, RUNNING, DONE, FAILED, SUPERSEDED)


@dataclass(frozen=True)
class Instance:
    """One image of a study as a source lists it (series and SOP Instance UID)."""

    series_uid: str
    sop_uid: str


def instances_sha256(instances: list[Instance]) -> str:
    """Identity of an instance set (:func:`cad.io.uids.instance_set_sha256`)."""
    return instance_set_sha256(i.sop_uid for i in instances)


@dataclass(frozen=True)
class Job:
    id: int
    study_uid: str
    instances: tuple[Instance, ...]
    instances_sha256: str
    source: str
    location: str | None
    state: str
    attempts: int
    enqueued: float
    started: float | None
    finished: float | None
    reason: str | None
    outputs: dict[str, Any] | None
    superseded_by: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            row["id"], row["study_uid"], tuple(Instance(*pair) for pair in json.loads(row["instances"])),
            row["instances_sha256"], row["source"], row["location"], row["state"], row["attempts"],
            row["enqueued"], row["started"], row["finished"], row["reason"],
            json.loads(row["outputs"]) if row["outputs"] else None, row["superseded_by"],
        )

    def public(self) -> dict[str, Any]:
        """The job as the HTTP API reports it (UIDs and states; no patient identifiers)."""
        return {
            "job_id": self.id, "study_instance_uid": self.study_uid, "state": self.state,
            "source": self.source, "instances": len(self.instances), "attempts": self.attempts,
            "enqueued": self.enqueued, "started": self.started, "finished": self.finished,
            "reason": self.reason, "outputs": self.outputs, "superseded_by": self.superseded_by,
        }


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient (PACS) errors: base * 2**(attempt-1), capped."""

    max_attempts: int = 5
    base_seconds: float = 2.0
    max_seconds: float = 300.0

    def delay(self, attempts: int) -> float:
        factor: int = 2 ** max(0, attempts - 1)
        return min(self.max_seconds, self.base_seconds * factor)


def _job(db: sqlite3.Connection, job_id: int) -> Job:
    """The job with ``job_id``, as stored now (inside the caller's transaction)."""
    return Job.from_row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


class JobQueue:
    """The queue over one SQLite connection (one per thread)."""

    def __init__(self, connection: sqlite3.Connection, retry: RetryPolicy | None = None) -> None:
        self.db = connection
        self.retry = retry or RetryPolicy()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def enqueue(self, study_uid: str, instances: list[Instance], source: str,
                location: str | None = None) -> tuple[Job, bool]:
        """The job for this study and instance set, and whether it was new.

        A new instance set of a study supersedes its older jobs that have not started.
        """
        if not instances:
            raise ValueError(f"study {uid_tail(study_uid)}: no instances to analyse")
        digest = instances_sha256(instances)
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE study_uid = ? AND instances_sha256 = ?",
                             (study_uid, digest)).fetchone()
            if row is not None:
                return Job.from_row(row), False
            pairs = sorted({(i.series_uid, i.sop_uid) for i in instances}, key=lambda p: p[1])
            cursor = db.execute(
                "INSERT INTO jobs (study_uid, instances_sha256, instances, source, location, state, next_attempt,"
                " enqueued) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (study_uid, digest, json.dumps(pairs), source, location, PENDING, now, now))
            job_id = int(cursor.lastrowid or 0)
            db.execute("UPDATE jobs SET state = ?, superseded_by = ?, finished = ? "
                       "WHERE study_uid = ? AND id <> ? AND state = ?",
                       (SUPERSEDED, job_id, now, study_uid, job_id, PENDING))
            return _job(db, job_id), True

    def recover(self) -> int:
        """Put jobs a killed process left running back in the queue; returns how many."""
        with self.transaction() as db:
            return db.execute("UPDATE jobs SET state = ?, next_attempt = ? WHERE state = ?",
                              (PENDING, time.time(), RUNNING)).rowcount

    def claim(self) -> Job | None:
        """Take the oldest job that is due, marking it running."""
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE state = ? AND next_attempt <= ? ORDER BY enqueued, id LIMIT 1",
                             (PENDING, now)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = ?, attempts = attempts + 1, started = ? WHERE id = ?",
                       (RUNNING, now, row["id"]))
            return _job(db, row["id"])

    def finish(self, job: Job, state: str, record: dict[str, Any], outputs: dict[str, Any] | None = None,
               reason: str | None = None) -> Job:
        """End ``job`` as done or failed and append its audit record, in one transaction.

        A successful job supersedes the finished jobs of the same study that analysed fewer
        (or other) instances.
        """
        if state not in (DONE, FAILED):
            raise ValueError(f"a job finishes done or failed, not {state}")
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE jobs SET state = ?, finished = ?, outputs = ?, reason = ? WHERE id = ?",
                       (state, now, json.dumps(outputs, sort_keys=True) if outputs else None, reason, job.id))
            superseded = []
            if state == DONE:
                superseded = [r["id"] for r in db.execute(
                    "SELECT id FROM jobs WHERE study_uid = ? AND id < ? AND state IN (?, ?)",
                    (job.study_uid, job.id, DONE, FAILED))]
                for old in superseded:
                    db.execute("UPDATE jobs SET state = ?, superseded_by = ? WHERE id = ?", (SUPERSEDED, job.id, old))
            audit.append(db, {**record, "job_id": job.id, "state": state, "supersedes_jobs": superseded})
            return _job(db, job.id)

    def retry_later(self, job: Job, reason: str, record: dict[str, Any]) -> Job:
        """A transient error: back to pending after the backoff, or failed (audited) when the
        attempts are used up."""
        if job.attempts >= self.retry.max_attempts:
            return self.finish(job, FAILED, record, reason=f"{reason} (gave up after {job.attempts} attempts)")
        with self.transaction() as db:
            db.execute("UPDATE jobs SET state = ?, next_attempt = ?, reason = ? WHERE id = ?",
                       (PENDING, time.time() + self.retry.delay(job.attempts), reason, job.id))
            return _job(db, job.id)

    def wait(self, job: Job, reason: str) -> Job:
        """The machine cannot take the job's outputs now (no space left): back to pending after
        the backoff of its attempts, without using one up (a full disk is not the study's fault)."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET state = ?, attempts = MAX(attempts - 1, 0), next_attempt = ?, reason = ? "
                       "WHERE id = ?", (PENDING, time.time() + self.retry.delay(WAIT_ATTEMPTS), reason, job.id))
            return _job(db, job.id)

    def requeue(self, job_id: int, who: str) -> Job:
        """Analyse a finished job again (an operator's decision, audited)."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            if row["state"] in (PENDING, RUNNING):
                return Job.from_row(row)
            db.execute("UPDATE jobs SET state = ?, attempts = 0, next_attempt = ?, reason = NULL, superseded_by = NULL"
                       " WHERE id = ?", (PENDING, time.time(), job_id))
            audit.append(db, {"event": "requeued", "job_id": job_id, "study_uid": row["study_uid"],
                              "previous_state": row["state"], "by": who})
            return _job(db, job_id)

    def get(self, job_id: int) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def jobs(self, study_uid: str | None = None, state: str | None = None, limit: int = 1000,
             newest_first: bool = False) -> list[Job]:
        """Jobs (of a study, in a state), oldest first, or the newest ``limit`` newest first."""
        query = "SELECT * FROM jobs WHERE 1 = 1"
        args: list[str] = []
        if study_uid:
            query, args = query + " AND study_uid = ?", [*args, study_uid]
        if state:
            query, args = query + " AND state = ?", [*args, state]
        rows = self.db.execute(query + (" ORDER BY id DESC" if newest_first else " ORDER BY id") + " LIMIT ?",
                               (*args, limit))
        return [Job.from_row(r) for r in rows]

    def oldest_pending(self) -> float | None:
        """When the job waiting longest to run was enqueued (None: nothing waits)."""
        first: float | None = self.db.execute("SELECT MIN(enqueued) FROM jobs WHERE state = ?", (PENDING,)).fetchone()[0]
        return first

    def latest_done(self, study_uid: str, before: int) -> Job | None:
        """The most recent successful job of the study before job ``before`` (its result is
        the one a new result supersedes)."""
        row = self.db.execute("SELECT * FROM jobs WHERE study_uid = ? AND id < ? AND state IN (?, ?, ?) "
                              "AND outputs IS NOT NULL ORDER BY id DESC LIMIT 1",
                              (study_uid, before, DONE, FAILED, SUPERSEDED)).fetchone()
        return Job.from_row(row) if row else None

    def results_before(self, study_uid: str, before: int) -> int:
        """How many results (jobs with outputs) the study had before job ``before``: the new
        result is number this + 1 (RC-034)."""
        row = self.db.execute("SELECT COUNT(*) FROM jobs WHERE study_uid = ? AND id < ? AND state IN (?, ?, ?) "
                              "AND outputs IS NOT NULL", (study_uid, before, DONE, FAILED, SUPERSEDED)).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        found = {r["state"]: r["n"] for r in self.db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}
        return {state: int(found.get(state, 0)) for state in STATES}

    def idle(self) -> bool:
        """No job pending or running (pending jobs waiting for a retry count as work)."""
        counts = self.counts()
        return counts[PENDING] == 0 and counts[RUNNING] == 0

    def seen_count(self, source: str, study_uid: str) -> int | None:
        row = self.db.execute("SELECT instance_count FROM seen WHERE source = ? AND study_uid = ?",
                              (source, study_uid)).fetchone()
        return int(row["instance_count"]) if row else None

    def mark_seen(self, source: str, study_uid: str, count: int) -> None:
        self.db.execute("INSERT INTO seen (source, study_uid, instance_count) VALUES (?, ?, ?) "
                        "ON CONFLICT (source, study_uid) DO UPDATE SET instance_count = excluded.instance_count",
                        (source, study_uid, count))
