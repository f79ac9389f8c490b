"""Append-only, tamper-evident audit log of every analysis (a SHA-256 hash chain).

Each record is canonical JSON; its hash is SHA-256 over the previous record's hash and the
record, so changing, inserting or removing any record breaks every hash after it. The table
refuses UPDATE and DELETE (triggers), and records are appended in the same transaction as the
job state they describe, so the log and the queue never disagree after a crash.
:func:`verify` recomputes the chain; the head hash it reports can be copied elsewhere (a
ticket, a daily e-mail) so that a truncated tail is detectable too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def chain_hash(previous: str, record_json: str) -> str:
    return hashlib.sha256(f"{previous}\n{record_json}".encode()).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def append(connection: sqlite3.Connection, record: dict[str, Any]) -> str:
    """Append ``record`` (with a UTC time added) inside the caller's transaction; returns its hash."""
    row = connection.execute("SELECT sha256 FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    previous = row["sha256"] if row else GENESIS
    text = canonical({"time": utc_now(), **record})
    digest = chain_hash(previous, text)
    connection.execute("INSERT INTO audit (record, prev_sha256, sha256) VALUES (?, ?, ?)", (text, previous, digest))
    return digest


@dataclass(frozen=True)
class Verification:
    records: int
    head_sha256: str
    problems: tuple[str, ...]

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(connection: sqlite3.Connection) -> Verification:
    """Recompute the chain: sequence numbers without gaps, each link and each hash."""
    problems: list[str] = []
    previous, expected_seq, count = GENESIS, 1, 0
    for row in connection.execute("SELECT seq, record, prev_sha256, sha256 FROM audit ORDER BY seq"):
        count += 1
        if row["seq"] != expected_seq:
            problems.append(f"record {row['seq']}: expected sequence number {expected_seq} (records removed)")
        if row["prev_sha256"] != previous:
            problems.append(f"record {row['seq']}: does not link to the record before it")
        if chain_hash(row["prev_sha256"], row["record"]) != row["sha256"]:
            problems.append(f"record {row['seq']}: content does not match its hash (altered)")
        try:
            json.loads(row["record"])
        except ValueError:
            problems.append(f"record {row['seq']}: not JSON")
        previous, expected_seq = row["sha256"], row["seq"] + 1
    return Verification(count, previous, tuple(problems))


def records(connection: sqlite3.Connection, study_uid: str | None = None) -> list[dict[str, Any]]:
    """The audit records (optionally of one study), oldest first."""
    out = [json.loads(row["record"]) for row in connection.execute("SELECT record FROM audit ORDER BY seq")]
    return [r for r in out if study_uid is None or r.get("study_uid") == study_uid]
