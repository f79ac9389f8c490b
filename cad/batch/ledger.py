"""The durable run ledger of `cad batch`: one SQLite row per (study, instance set).

A study's outputs are written to a temporary folder and moved into place in one rename; only
then is its row marked done, in a transaction. A run killed at any point and started again with
the same arguments therefore finds each study either done (skipped, nothing rewritten) or not
(analysed again from scratch, its half-written temporary folder discarded): exactly once. A
study whose instance set changed since is new work. Durability and the one-writer lock are the
rules of every exactly-once store of the product (:mod:`cad.io.durable`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cad.batch.discover import StudyWork
from cad.errors import UsageError
from cad.io.durable import folder_lock, open_database

LEDGER_FILE = "batch-ledger.sqlite"
LOCK_FILE = "batch.lock"
PENDING, DONE, FAILED = "pending", "done", "failed"

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT NOT NULL,
    instances_sha256 TEXT NOT NULL,
    files INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    finished REAL,
    record TEXT,
    PRIMARY KEY (study_uid, instances_sha256)
);
"""


@dataclass(frozen=True)
class Outcome:
    """What a worker reports for one study (JSON-serialisable facts, no patient data)."""

    study_uid: str
    instances_sha256: str
    state: str
    reason: str | None
    record: dict[str, Any]

    @classmethod
    def failed(cls, work: StudyWork, reason: str, seconds: float | None = None, environment: bool = False) -> Outcome:
        """A study that ended without its outputs in place, and why; ``environment``: because the
        machine could not store them (no space left), which stops the run."""
        record: dict[str, Any] = {"study_uid": work.study_uid, "instances_sha256": work.instances_sha256}
        if seconds is not None:
            record["seconds"] = round(seconds, 3)
        if environment:
            record["environment"] = True
        return cls(work.study_uid, work.instances_sha256, FAILED, reason, record)

    @property
    def environment(self) -> bool:
        """Whether the study failed because the machine could not store its outputs."""
        return bool(self.record.get("environment"))


class Ledger:
    """The ledger of one output folder (one process writes it: the driver)."""

    def __init__(self, out: Path) -> None:
        self._lock = folder_lock(out, LOCK_FILE, UsageError(f"{out}: another `cad batch` is writing to this folder"))
        self.path = out / LEDGER_FILE
        self.db = open_database(self.path, SCHEMA)

    def plan(self, studies: list[StudyWork], retry_failed: bool = True) -> tuple[list[StudyWork], int]:
        """The studies still to do, and how many are already done (skipped). Failed studies are
        tried again unless ``retry_failed`` is off."""
        todo, done = [], 0
        with self.db:
            for work in studies:
                row = self.db.execute("SELECT state FROM studies WHERE study_uid = ? AND instances_sha256 = ?",
                                      (work.study_uid, work.instances_sha256)).fetchone()
                if row is not None and (row["state"] == DONE or (row["state"] == FAILED and not retry_failed)):
                    done += 1
                    continue
                if row is None:
                    self.db.execute("INSERT INTO studies (study_uid, instances_sha256, files, state) VALUES (?, ?, ?, ?)",
                                    (work.study_uid, work.instances_sha256, len(work.files), PENDING))
                todo.append(work)
        return todo, done

    def record(self, outcome: Outcome, attempts: int) -> None:
        with self.db:
            self.db.execute("UPDATE studies SET state = ?, reason = ?, finished = ?, attempts = attempts + ?, record = ? "
                            "WHERE study_uid = ? AND instances_sha256 = ?",
                            (outcome.state, outcome.reason, time.time(), attempts,
                             json.dumps(outcome.record, sort_keys=True), outcome.study_uid, outcome.instances_sha256))

    def counts(self) -> dict[str, int]:
        found = {r["state"]: r["n"] for r in self.db.execute("SELECT state, COUNT(*) AS n FROM studies GROUP BY state")}
        return {s: int(found.get(s, 0)) for s in (PENDING, DONE, FAILED)}

    def failures(self) -> dict[str, int]:
        """Failed studies by reason."""
        rows = self.db.execute("SELECT reason, COUNT(*) AS n FROM studies WHERE state = ? GROUP BY reason", (FAILED,))
        return {str(r["reason"]): int(r["n"]) for r in rows}

    def incomplete(self) -> list[str]:
        """Studies done with some images not analysed (their results are incomplete)."""
        rows = self.db.execute("SELECT study_uid FROM studies WHERE state = ? AND "
                               "COALESCE(json_extract(record, '$.images_not_analysed'), 0) > 0 ORDER BY study_uid",
                               (DONE,))
        return [str(r["study_uid"]) for r in rows]

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(r["record"]) for r in self.db.execute("SELECT record FROM studies WHERE record IS NOT NULL")]

    def close(self) -> None:
        self.db.close()
        self._lock.close()
