"""Active alerts of `cad serve` (RC-029): durable, de-duplicated, acknowledged in the audit log,
delivered to the log and to a configured webhook.

An alert has a ``key`` naming its condition (``study-failed:<job>``, ``study-late:<job>``,
``not-ready:<check>``, ``audit-broken``). While an alert with that key is open or acknowledged,
raising it again only counts the occurrence, so a condition that persists is one alert, not one
per check, and an acknowledged one does not come back while it lasts. A condition that clears
resolves its alert (a later recurrence is a new alert); a person acknowledges an alert with a note. Raising,
resolving and acknowledging are each appended to the hash-chained audit log in the same SQLite
transaction as the alert row. Messages carry the end of a study UID, never patient data.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import requests

from cad.io.uids import uid_tail
from cad.service import audit, drift, input_drift, outcomes
from cad.service.queue import FAILED, PENDING, RUNNING, JobQueue
from cad.service.settings import MonitoringSettings

if TYPE_CHECKING:
    from cad.service.reference import MonitoringReference

log = logging.getLogger(__name__)

OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"
ALERT_STATES = (OPEN, ACKNOWLEDGED, RESOLVED)


class Severity(str, Enum):
    WARNING = "warning"
    CRITICAL = "critical"


class AlertKind(str, Enum):
    """What an alert is about (the first part of its key)."""

    #: a study ended failed: the readers have no CAD result for it (RC-029)
    STUDY_FAILED = "study-failed"
    #: a study waited or ran longer than the configured latency (RC-029)
    STUDY_LATE = "study-late"
    #: a readiness check fails: model verification, database, a source (RC-029)
    NOT_READY = "not-ready"
    #: the audit log's hash chain does not verify
    AUDIT_BROKEN = "audit-broken"
    #: an output fact's EWMA chart left its control limits (cad.service.drift)
    OUTPUT_DRIFT = "output-drift"
    #: sensitivity against radiologists' outcomes below the configured floor (cad.service.outcomes)
    PERFORMANCE = "performance"
    #: an acquisition device (manufacturer, model, software versions) not seen before at the site
    NEW_DEVICE = "new-device"
    #: an input fact of a device left its site baseline (cad.service.input_drift)
    INPUT_DRIFT = "input-drift"


@dataclass(frozen=True)
class Alert:
    id: int
    key: str
    kind: str
    severity: str
    message: str
    study_uid: str | None
    state: str
    first_raised: float
    last_raised: float
    occurrences: int
    acknowledged_by: str | None
    acknowledged_at: float | None
    note: str | None
    resolved_at: float | None
    delivered: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Alert:
        return cls(row["id"], row["key"], row["kind"], row["severity"], row["message"], row["study_uid"],
                   row["state"], row["first_raised"], row["last_raised"], row["occurrences"],
                   row["acknowledged_by"], row["acknowledged_at"], row["note"], row["resolved_at"],
                   bool(row["delivered"]))

    def public(self) -> dict[str, Any]:
        """The alert as the API, the webhook and the dashboard show it."""
        return asdict(self)


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _get(connection: sqlite3.Connection, alert_id: int) -> Alert | None:
    row = connection.execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
    return Alert.from_row(row) if row else None


def raise_alert(connection: sqlite3.Connection, kind: AlertKind, subject: str, severity: Severity, message: str,
                study_uid: str | None = None, now: float | None = None) -> tuple[Alert, bool]:
    """Raise the alert ``<kind>:<subject>``; (the alert, whether it is new). A new alert is
    audited; an unresolved one with the same key only counts another occurrence."""
    now = time.time() if now is None else now
    key = f"{kind.value}:{subject}" if subject else kind.value
    with _transaction(connection):
        row = connection.execute("SELECT * FROM alerts WHERE key = ? AND state != ?", (key, RESOLVED)).fetchone()
        if row is not None:
            connection.execute("UPDATE alerts SET last_raised = ?, occurrences = occurrences + 1 WHERE id = ?",
                               (now, row["id"]))
            alert = _get(connection, row["id"])
            assert alert is not None
            return alert, False
        cursor = connection.execute(
            "INSERT INTO alerts (key, kind, severity, message, study_uid, state, first_raised, last_raised) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (key, kind.value, severity.value, message, study_uid, OPEN, now, now))
        alert_id = int(cursor.lastrowid or 0)
        audit.append(connection, {"event": "alert_raised", "alert_id": alert_id, "key": key,
                                  "severity": severity.value, "message": message, "study_uid": study_uid})
    alert = _get(connection, alert_id)
    assert alert is not None
    (log.error if severity is Severity.CRITICAL else log.warning)("ALERT %s [%s] %s", key, severity.value, message)
    return alert, True


def resolve(connection: sqlite3.Connection, kind: AlertKind, subject: str, why: str) -> Alert | None:
    """Resolve the unresolved alert ``<kind>:<subject>`` because its condition cleared (audited)."""
    key = f"{kind.value}:{subject}" if subject else kind.value
    with _transaction(connection):
        row = connection.execute("SELECT id FROM alerts WHERE key = ? AND state != ?", (key, RESOLVED)).fetchone()
        if row is None:
            return None
        connection.execute("UPDATE alerts SET state = ?, resolved_at = ? WHERE id = ?", (RESOLVED, time.time(), row["id"]))
        audit.append(connection, {"event": "alert_resolved", "alert_id": row["id"], "key": key, "why": why})
    log.info("alert %s resolved: %s", key, why)
    return _get(connection, row["id"])


def acknowledge(connection: sqlite3.Connection, alert_id: int, who: str, note: str) -> Alert | None:
    """A person's acknowledgement (who, when, note), audited; None when there is no such alert.
    Acknowledging a resolved or already acknowledged alert records the note and keeps its state."""
    with _transaction(connection):
        alert = _get(connection, alert_id)
        if alert is None:
            return None
        state = ACKNOWLEDGED if alert.state == OPEN else alert.state
        now = time.time()
        connection.execute("UPDATE alerts SET state = ?, acknowledged_by = ?, acknowledged_at = ?, note = ? "
                           "WHERE id = ?", (state, who, now, note, alert_id))
        audit.append(connection, {"event": "alert_acknowledged", "alert_id": alert_id, "key": alert.key,
                                  "by": who, "note": note})
    return _get(connection, alert_id)


def alerts(connection: sqlite3.Connection, state: str | None = None, limit: int = 200) -> list[Alert]:
    """Alerts, newest first (optionally only those in ``state``)."""
    if state is not None and state not in ALERT_STATES:
        raise ValueError(f"state must be one of {', '.join(ALERT_STATES)}")
    query = "SELECT * FROM alerts" + (" WHERE state = ?" if state else "") + " ORDER BY id DESC LIMIT ?"
    return [Alert.from_row(r) for r in connection.execute(query, (state, limit) if state else (limit,))]


def open_counts(connection: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """Open (unacknowledged, unresolved) alerts per (kind, severity)."""
    rows = connection.execute("SELECT kind, severity, COUNT(*) AS n FROM alerts WHERE state = ? GROUP BY kind, severity",
                              (OPEN,))
    return {(r["kind"], r["severity"]): int(r["n"]) for r in rows}


class Webhook:
    """Delivers each new alert as one JSON POST to a configured URL (a chat or paging gateway at
    the site). Undelivered alerts stay marked and are sent again on the next round, oldest first."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self.session = requests.Session()

    def deliver_pending(self, connection: sqlite3.Connection, service: dict[str, Any]) -> int:
        """Send every undelivered alert; the number sent. A failure is logged (without the
        payload) and retried next time."""
        sent = 0
        for row in connection.execute("SELECT * FROM alerts WHERE delivered = 0 ORDER BY id").fetchall():
            alert = Alert.from_row(row)
            try:
                response = self.session.post(self.url, data=json.dumps({"alert": alert.public(), "service": service}),
                                             headers={"Content-Type": "application/json"}, timeout=self.timeout)
                response.raise_for_status()
            except requests.RequestException as exc:
                log.warning("alert webhook: alert %d not delivered (%s); will retry", alert.id, type(exc).__name__)
                return sent
            connection.execute("UPDATE alerts SET delivered = 1 WHERE id = ?", (alert.id,))
            sent += 1
        return sent


class AlertMonitor:
    """Checks the conditions of RC-029 on the service's state and raises or resolves alerts:
    failed studies, studies pending or running longer than ``late_seconds``, failing readiness
    checks, (every ``audit_every`` seconds) the audit chain, and the output-drift charts."""

    def __init__(self, settings: MonitoringSettings | None = None, webhook: Webhook | None = None,
                 reference: MonitoringReference | None = None) -> None:
        self.settings = settings or MonitoringSettings()
        self.settings.validate("monitoring settings")
        self.webhook = webhook
        #: the model's validation reference (its parts used where the settings choose "model")
        self.reference = reference
        self._monitored = -math.inf
        self._latest_facts: int | None = None  # the newest finished study monitored
        self._audit_checked = -math.inf
        #: the latest verification of the audit chain (the dashboard shows it)
        self.audit_status: dict[str, Any] | None = None

    @property
    def late_seconds(self) -> float:
        return self.settings.alerts.late_after_seconds

    def output_charts(self, connection: sqlite3.Connection) -> list[drift.ChartSeries]:
        """The output-drift charts as these settings and reference define them."""
        return drift.charts(connection, self.settings.output_drift, self.output_reference)

    @property
    def output_reference(self) -> Mapping[str, drift.Reference] | None:
        """Per-study output references from the model, when output drift is judged against it."""
        chosen = self.settings.output_drift.reference == "model"
        return self.reference.output if chosen and self.reference else None

    @property
    def input_reference(self) -> Mapping[str, Sequence[float]] | None:
        """The validation images' input facts, when input drift is judged against them."""
        chosen = self.settings.input_drift.reference == "model"
        return self.reference.inputs if chosen and self.reference else None

    def input_summary(self, connection: sqlite3.Connection) -> dict[str, Any]:
        """Input drift per device as these settings and reference define it."""
        return input_drift.summary(connection, self.settings.input_drift, self.input_reference)

    def check(self, queue: JobQueue, readiness: dict[str, bool], service: dict[str, Any],
              now: float | None = None) -> list[Alert]:
        """One round: the alerts raised new in it (each logged, and sent to the webhook)."""
        now = time.time() if now is None else now
        connection = queue.db
        new: list[Alert] = []

        def note(result: tuple[Alert, bool]) -> None:
            if result[1]:
                new.append(result[0])

        # failed jobs without an unresolved alert (however many failed before them)
        unalerted = connection.execute(
            "SELECT id FROM jobs j WHERE state = ? AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.state != ? "
            "AND a.key = ? || j.id)", (FAILED, RESOLVED, f"{AlertKind.STUDY_FAILED.value}:")).fetchall()
        for job in filter(None, (queue.get(row["id"]) for row in unalerted)):
            note(raise_alert(connection, AlertKind.STUDY_FAILED, str(job.id), Severity.CRITICAL,
                             f"study {uid_tail(job.study_uid)} has no CAD result: {job.reason}", job.study_uid, now))
        late = [j for state in (PENDING, RUNNING) for j in queue.jobs(state=state)  # oldest first: the late ones
                if now - j.enqueued > self.late_seconds]
        for job in late:
            minutes = (now - job.enqueued) / 60
            note(raise_alert(connection, AlertKind.STUDY_LATE, str(job.id), Severity.WARNING,
                             f"study {uid_tail(job.study_uid)} is {job.state} for {minutes:.0f} min, beyond the "
                             f"{self.late_seconds / 60:g} min limit: its CAD result is late", job.study_uid, now))
        unresolved = connection.execute("SELECT * FROM alerts WHERE state != ? AND kind IN (?, ?)",
                                        (RESOLVED, AlertKind.STUDY_FAILED.value, AlertKind.STUDY_LATE.value))
        for alert in map(Alert.from_row, unresolved.fetchall()):
            subject = alert.key.partition(":")[2]
            current = queue.get(int(subject))
            kind = AlertKind(alert.kind)
            lasting = (FAILED,) if kind is AlertKind.STUDY_FAILED else (PENDING, RUNNING)
            if current is None or current.state not in lasting:  # a job once late stays late until it ends
                resolve(connection, kind, subject, f"job is {current.state if current else 'gone'}")
        for name, ok in readiness.items():
            if ok:
                resolve(connection, AlertKind.NOT_READY, name, "the check passes again")
            else:
                note(raise_alert(connection, AlertKind.NOT_READY, name, Severity.CRITICAL,
                                 f"readiness check {name} fails: new studies may get no CAD result", None, now))
        if now - self._audit_checked >= self.settings.alerts.audit_every_seconds:
            self._audit_checked = now
            verification = audit.verify(connection)
            self.audit_status = {"intact": verification.intact, "records": verification.records,
                                 "problems": list(verification.problems), "checked": now}
            if verification.intact:
                resolve(connection, AlertKind.AUDIT_BROKEN, "", "the chain verifies again")
            else:
                note(raise_alert(connection, AlertKind.AUDIT_BROKEN, "", Severity.CRITICAL,
                                 f"the audit log does not verify: {verification.problems[0]}", None, now))
        latest = connection.execute("SELECT MAX(job_id) FROM study_facts").fetchone()[0]
        if latest != self._latest_facts or now - self._monitored >= self.settings.alerts.monitor_every_seconds:
            self._monitored, self._latest_facts = now, latest
            self._monitor(connection, now, note)
        if self.webhook is not None:
            self.webhook.deliver_pending(connection, service)
        return new

    def _monitor(self, connection: sqlite3.Connection, now: float,
                 note: Callable[[tuple[Alert, bool]], None]) -> None:
        """Post-market monitoring: output drift, acquisition devices and input drift, performance."""
        for series in self.output_charts(connection):
            state = series.state()
            if state.out_of_control and state.reference is not None:
                against = "the model's validation set" if series.from_model else "the site's first studies"
                note(raise_alert(connection, AlertKind.OUTPUT_DRIFT, state.fact, Severity.WARNING,
                                 f"{state.fact}: moving average {state.ewma:.3g} outside {state.lower:.3g} to "
                                 f"{state.upper:.3g} (reference {against}: mean {state.reference.mean:.3g}) after "
                                 f"{state.studies} studies", None, now))
            else:
                resolve(connection, AlertKind.OUTPUT_DRIFT, state.fact, "back within the control limits")
        validated = set(self.reference.devices) if self.reference else set()
        for device in input_drift.devices(connection):
            if device not in validated:  # a device of the validation set is not new
                note(raise_alert(connection, AlertKind.NEW_DEVICE, device, Severity.WARNING,
                                 f"images from a device not seen before: {device}; check its images and that it "
                                 "is in the intended use (docs/instructions-for-use.md)", None, now))
            for change in input_drift.compare(connection, device, self.settings.input_drift, self.input_reference):
                subject = f"{device}:{change.fact}"
                if change.drifting:
                    note(raise_alert(connection, AlertKind.INPUT_DRIFT, subject, Severity.WARNING,
                                     f"{change.fact} of {device}: the last {change.window} images differ from "
                                     + ("the model's validation images" if change.reference == "model" else
                                        f"the device's first {change.baseline}")
                                     + f" (KS distance {change.distance:.2f}, p {change.p_value:.1e})",
                                     None, now))
                else:
                    resolve(connection, AlertKind.INPUT_DRIFT, subject, "back within the baseline")
        floor = self.settings.performance
        if floor.sensitivity_floor is not None:
            found = outcomes.performance(connection, floor.window_days, now)
            sensitivity = found["sensitivity"]
            if found["cancers"] >= floor.min_cancers and sensitivity["estimate"] < floor.sensitivity_floor:
                low, high = sensitivity["ci95"]
                note(raise_alert(connection, AlertKind.PERFORMANCE, "sensitivity", Severity.CRITICAL,
                                 f"sensitivity against outcomes {sensitivity['estimate']:.3f} (95 % CI {low:.3f} to "
                                 f"{high:.3f}, {found['cancers']} cancers in {floor.window_days:g} days) is below "
                                 f"the floor {floor.sensitivity_floor:g}", None, now))
            else:
                resolve(connection, AlertKind.PERFORMANCE, "sensitivity", "at or above the floor, or too few cancers")
