"""The service's state folder: one SQLite database (job queue, alerts, audit log) and its lock.

SQLite in WAL mode, every change in a transaction: a process killed at any point leaves the
database at the last committed state, which is what makes the queue durable and the audit log
complete. One service process owns a state folder at a time (an exclusive ``flock``), so jobs
found running at start-up are known to be orphans of a killed process. Both rules are those of
every exactly-once store of the product (:mod:`cad.io.durable`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import IO

from cad.errors import UsageError
from cad.io.durable import folder_lock, open_database

DATABASE = "cad-service.sqlite"
LOCK = "cad-service.lock"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL,
    instances_sha256 TEXT NOT NULL,
    instances TEXT NOT NULL,
    source TEXT NOT NULL,
    location TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'superseded')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    enqueued REAL NOT NULL,
    started REAL,
    finished REAL,
    reason TEXT,
    outputs TEXT,
    superseded_by INTEGER REFERENCES jobs (id),
    UNIQUE (study_uid, instances_sha256)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, next_attempt);
CREATE INDEX IF NOT EXISTS jobs_study ON jobs (study_uid);
CREATE TABLE IF NOT EXISTS seen (
    source TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    instance_count INTEGER NOT NULL,
    PRIMARY KEY (source, study_uid)
);
CREATE TABLE IF NOT EXISTS arrivals (
    study_uid TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    last_arrival REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    prev_sha256 TEXT NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('warning', 'critical')),
    message TEXT NOT NULL,
    study_uid TEXT,
    state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    first_raised REAL NOT NULL,
    last_raised REAL NOT NULL,
    occurrences INTEGER NOT NULL DEFAULT 1,
    acknowledged_by TEXT,
    acknowledged_at REAL,
    note TEXT,
    resolved_at REAL,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_unresolved_key ON alerts (key) WHERE state != 'resolved';
CREATE TABLE IF NOT EXISTS study_facts (
    job_id INTEGER PRIMARY KEY REFERENCES jobs (id),
    study_uid TEXT NOT NULL,
    finished REAL NOT NULL,
    facts TEXT NOT NULL,
    sides TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS study_facts_study ON study_facts (study_uid);
CREATE TABLE IF NOT EXISTS image_facts (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    sop_uid TEXT NOT NULL,
    device TEXT NOT NULL,
    finished REAL NOT NULL,
    facts TEXT NOT NULL,
    PRIMARY KEY (job_id, sop_uid)
);
CREATE INDEX IF NOT EXISTS image_facts_device ON image_facts (device, finished);
CREATE TABLE IF NOT EXISTS outcomes (
    study_uid TEXT PRIMARY KEY,
    assessment INTEGER NOT NULL CHECK (assessment BETWEEN 0 AND 6),
    recall INTEGER NOT NULL CHECK (recall IN (0, 1)),
    pathology TEXT NOT NULL,
    laterality TEXT NOT NULL,
    location TEXT NOT NULL,
    imported REAL NOT NULL,
    source_sha256 TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


class StateLockedError(UsageError, RuntimeError):
    """Another service process owns the state folder."""


def connect(state: Path) -> sqlite3.Connection:
    """A connection to the state database (created with its schema if new)."""
    return open_database(state / DATABASE, SCHEMA, timeout=30.0, shared_between_threads=True, foreign_keys=True)


def lock_state(state: Path) -> IO[str]:
    """Take the state folder's exclusive lock for this process (held while the handle is open)."""
    return folder_lock(state, LOCK, StateLockedError(f"{state}: another `cad serve` process uses this state folder"))
