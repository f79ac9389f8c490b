"""Active alerts (RC-029) and /metrics on a real state database and a real local webhook (SRS-SVC-012/013)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cad.io.uids import uid_tail
from cad.service import alerts, audit, store
from cad.service.alerts import AlertKind, AlertMonitor, Severity, Webhook
from cad.service.metrics import ServiceMetrics
from cad.service.queue import FAILED, Instance, JobQueue
from cad.service.settings import AlertSettings, MonitoringSettings
from cad_tools.orthanc import free_port


@pytest.fixture()
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    connection = store.connect(tmp_path / "state")
    yield JobQueue(connection)
    connection.close()


def _job(queue: JobQueue, uid: str = "1.2.826.0.1.3680043.2.1125.1.55") -> int:
    job, _ = queue.enqueue(uid, [Instance("1.2.3", f"{uid}.{k}") for k in range(4)], "watch:inbox")
    return job.id


def _fail(queue: JobQueue, job_id: int, reason: str = "no image could be analysed: pixel data truncated") -> None:
    job = queue.claim()
    assert job is not None and job.id == job_id
    queue.finish(job, FAILED, {"study_uid": job.study_uid, "event": "analysis"}, reason=reason)


@pytest.mark.req("SRS-SVC-012")
def test_alerts_are_deduplicated_acknowledged_resolved_and_audited(queue: JobQueue) -> None:
    db = queue.db
    first, new = alerts.raise_alert(db, AlertKind.NOT_READY, "model_verified", Severity.CRITICAL, "model fails")
    again, repeated = alerts.raise_alert(db, AlertKind.NOT_READY, "model_verified", Severity.CRITICAL, "model fails")
    assert new and not repeated and again.id == first.id and again.occurrences == 2
    acknowledged = alerts.acknowledge(db, first.id, "qa-physicist", "weights restored from the release medium")
    assert acknowledged is not None and acknowledged.state == alerts.ACKNOWLEDGED
    assert acknowledged.acknowledged_by == "qa-physicist" and acknowledged.acknowledged_at is not None
    # still failing but acknowledged: not a new alert
    assert not alerts.raise_alert(db, AlertKind.NOT_READY, "model_verified", Severity.CRITICAL, "model fails")[1]
    resolved = alerts.resolve(db, AlertKind.NOT_READY, "model_verified", "the check passes again")
    assert resolved is not None and resolved.state == alerts.RESOLVED
    recurrence, new_again = alerts.raise_alert(db, AlertKind.NOT_READY, "model_verified", Severity.CRITICAL, "again")
    assert new_again and recurrence.id != first.id
    assert alerts.acknowledge(db, 9999, "someone", "no such alert") is None
    events = [(r["event"], r.get("alert_id")) for r in audit.records(db)]
    assert events == [("alert_raised", first.id), ("alert_acknowledged", first.id), ("alert_resolved", first.id),
                      ("alert_raised", recurrence.id)]
    assert [r for r in audit.records(db) if r["event"] == "alert_acknowledged"][0]["by"] == "qa-physicist"
    assert audit.verify(db).intact


@pytest.mark.req("SRS-SVC-012")
def test_failed_late_and_not_ready_raise_alerts_that_clear_with_their_condition(queue: JobQueue) -> None:
    monitor = AlertMonitor(MonitoringSettings(alerts=AlertSettings(600, audit_every_seconds=0)))
    failed = _job(queue, "1.2.826.0.1.3680043.2.1125.1.11")
    _fail(queue, failed)
    waiting = _job(queue, "1.2.826.0.1.3680043.2.1125.1.22")
    enqueued = queue.get(waiting).enqueued  # type: ignore[union-attr]
    new = monitor.check(queue, {"model_verified": True, "database": True}, {}, now=enqueued + 60)
    assert [a.key for a in new] == [f"study-failed:{failed}"]
    tail = uid_tail("1.2.826.0.1.3680043.2.1125.1.11")
    assert new[0].severity == "critical" and f"study {tail} has no CAD result" in new[0].message
    assert "1.2.826.0.1" not in new[0].message, "the message names the study by the end of its UID only"
    assert "pixel data truncated" in new[0].message and new[0].study_uid == "1.2.826.0.1.3680043.2.1125.1.11"
    late = monitor.check(queue, {"model_verified": False, "database": True}, {}, now=enqueued + 601)
    assert sorted(a.key for a in late) == ["not-ready:model_verified", f"study-late:{waiting}"]
    assert monitor.check(queue, {"model_verified": False, "database": True}, {}, now=enqueued + 700) == []
    # the late study runs and the model verifies again: both alerts resolve; the failed one stays
    job = queue.claim()
    assert job is not None and job.id == waiting
    queue.finish(job, "done", {"study_uid": job.study_uid, "event": "analysis"})
    monitor.check(queue, {"model_verified": True, "database": True}, {}, now=enqueued + 800)
    states = {a.key: a.state for a in alerts.alerts(queue.db)}
    assert states == {f"study-failed:{failed}": "open", f"study-late:{waiting}": "resolved",
                      "not-ready:model_verified": "resolved"}
    # requeued and analysed: the failed study's alert resolves too
    queue.requeue(failed, "qa")
    job = queue.claim()
    assert job is not None
    queue.finish(job, "done", {"study_uid": job.study_uid, "event": "analysis"})
    monitor.check(queue, {"model_verified": True}, {}, now=enqueued + 900)
    assert {a.key: a.state for a in alerts.alerts(queue.db)}[f"study-failed:{failed}"] == "resolved"


@pytest.mark.req("SRS-SVC-012")
def test_a_broken_audit_chain_is_an_alert(queue: JobQueue) -> None:
    audit.append(queue.db, {"event": "analysis", "study_uid": "1.2.3"})
    queue.db.execute("DROP TRIGGER audit_append_only_update")
    queue.db.execute("UPDATE audit SET record = replace(record, '1.2.3', '1.2.4') WHERE seq = 1")
    (alert,) = AlertMonitor(MonitoringSettings(alerts=AlertSettings(60, audit_every_seconds=0))).check(queue, {}, {})
    assert alert.key == "audit-broken" and "content does not match its hash" in alert.message


@pytest.mark.req("SRS-SVC-012")
def test_new_alerts_reach_the_webhook_and_are_retried_until_delivered(
        queue: JobQueue, webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    _fail(queue, _job(queue))
    monitor = AlertMonitor(MonitoringSettings(alerts=AlertSettings(600, audit_every_seconds=3600)),
                           Webhook(down, timeout=1.0))
    (alert,) = monitor.check(queue, {}, {"name": "test-site"})
    assert not alerts.alerts(queue.db)[0].delivered and received == []
    monitor.webhook = Webhook(url)
    assert monitor.check(queue, {}, {"name": "test-site"}) == []  # not new, but now delivered
    assert [m["alert"]["id"] for m in received] == [alert.id] and received[0]["service"] == {"name": "test-site"}
    assert received[0]["alert"]["key"] == alert.key and alerts.alerts(queue.db)[0].delivered
    monitor.check(queue, {}, {})
    assert len(received) == 1, "delivered once"


@pytest.mark.req("SRS-SVC-013")
def test_metrics_are_prometheus_exposition_of_the_queue_alerts_and_jobs(queue: JobQueue, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    _fail(queue, _job(queue))
    _job(queue, "1.2.826.0.1.3680043.2.1125.1.77")
    AlertMonitor(MonitoringSettings(alerts=AlertSettings(600))).check(queue, {}, {})
    metrics = ServiceMetrics(tmp_path / "state")
    metrics.job_finished("done", {"images_analysed": 4, "images_not_analysed": 0, "marks_at_operating_point": 2,
                                  "seconds": 1.3, "queue_latency_s": 12.0})
    metrics.job_finished("failed", {"images_analysed": 0, "images_not_analysed": 4, "seconds": 0.4})
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.exposition().decode())
               for s in family.samples}
    assert samples[("cad_queue_jobs", (("state", "failed"),))] == 1
    assert samples[("cad_queue_jobs", (("state", "pending"),))] == 1
    assert samples[("cad_queue_oldest_pending_seconds", ())] >= 0
    assert samples[("cad_alerts_open", (("kind", "study-failed"), ("severity", "critical")))] == 1
    assert samples[("cad_studies_total", (("state", "done"),))] == 1
    assert samples[("cad_studies_total", (("state", "failed"),))] == 1
    assert samples[("cad_images_total", (("status", "analysed"),))] == 4
    assert samples[("cad_images_total", (("status", "not_analysed"),))] == 4
    assert samples[("cad_marks_total", ())] == 2
    assert samples[("cad_study_seconds_count", ())] == 2
    assert samples[("cad_queue_wait_seconds_bucket", (("le", "30.0"),))] == 1


@pytest.mark.req("SRS-SVC-012")
def test_every_failed_study_is_alerted_however_many_failed_before(queue: JobQueue) -> None:
    # a long-running site: more failed jobs than one page of the job list (1000)
    queue.db.executemany(
        "INSERT INTO jobs (id, study_uid, instances_sha256, instances, source, state, next_attempt, enqueued, reason) "
        "VALUES (?, ?, ?, '[]', 'test', 'failed', 0, 0, 'not MG')", [(n, f"1.2.{n}", str(n)) for n in range(1, 1202)])
    monitor = AlertMonitor(MonitoringSettings(alerts=AlertSettings(600, audit_every_seconds=3600)))
    assert len(monitor.check(queue, {}, {})) == 1201
    assert monitor.check(queue, {}, {}) == []
    queue.requeue(1201, "qa")  # the newest: its alert resolves, and a new failure is a new alert
    monitor.check(queue, {}, {})
    assert {a.key: a.state for a in alerts.alerts(queue.db, limit=5)}["study-failed:1201"] == "resolved"
