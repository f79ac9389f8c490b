"""What makes the product's exactly-once stores durable: one process per folder (an exclusive
``flock`` held for the process's life) and SQLite in WAL mode with full synchronisation, so a
process killed at any point leaves the last committed transaction.

Two stores use it, with schemas of their own: `cad batch`'s run ledger (:mod:`cad.batch.ledger`:
one row per study and instance set of a run, kept in the output folder it describes) and the
service's state database (:mod:`cad.service.store`: a job queue with claims, retry schedules and
supersession, committed in one transaction with the audit log, alerts and monitoring facts).
They share this rule, not one schema: a batch ledger must travel with its outputs and needs
none of the service's states, and the service's queue row is also its audit and retry record.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from typing import IO

from cad.errors import CadError


def folder_lock(folder: Path, name: str, busy: CadError) -> IO[str]:
    """Take ``folder``'s exclusive lock (file ``name``) for this process, held while the returned
    handle is open; raise ``busy`` when another process holds it. The file names the holder's PID."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / name).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise busy from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def open_database(path: Path, schema: str, timeout: float = 5.0, shared_between_threads: bool = False,
                  foreign_keys: bool = False) -> sqlite3.Connection:
    """A connection to the SQLite database at ``path`` (created with ``schema`` if new), in
    autocommit mode (transactions are explicit), WAL journal, full synchronisation, rows by name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                                 check_same_thread=not shared_between_threads)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    if foreign_keys:
        connection.execute("PRAGMA foreign_keys=ON")
    connection.executescript(schema)
    return connection
