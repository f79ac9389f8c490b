"""Job queue and audit chain semantics on a real SQLite database (SRS-SVC-002, 003, 005, 007)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cad.service import audit, store
from cad.service.queue import DONE, FAILED, PENDING, RUNNING, SUPERSEDED, Instance, JobQueue, RetryPolicy, instances_sha256


def instances(*sops: str) -> list[Instance]:
    return [Instance("1.9", sop) for sop in sops]


@pytest.fixture()
def queue(tmp_path: Path) -> JobQueue:
    return JobQueue(store.connect(tmp_path / "state"), RetryPolicy(max_attempts=3, base_seconds=10.0, max_seconds=25.0))


@pytest.mark.req("SRS-SVC-002")
def test_same_study_and_instances_are_queued_once_whatever_the_order(queue: JobQueue) -> None:
    first, new = queue.enqueue("1.1", instances("1.1.1", "1.1.2"), "dicomweb")
    again, new_again = queue.enqueue("1.1", instances("1.1.2", "1.1.1"), "watch")
    assert new and not new_again and again.id == first.id
    assert [j.id for j in queue.jobs()] == [first.id]
    with pytest.raises(ValueError, match="no instances"):
        queue.enqueue("1.2", [], "dicomweb")


@pytest.mark.req("SRS-SVC-002")
def test_claim_takes_the_oldest_due_job_once_and_recover_returns_orphans(queue: JobQueue, tmp_path: Path) -> None:
    a, _ = queue.enqueue("1.1", instances("1.1.1"), "dicomweb")
    b, _ = queue.enqueue("1.2", instances("1.2.1"), "dicomweb")
    claimed = queue.claim()
    assert claimed is not None and claimed.id == a.id and claimed.state == RUNNING and claimed.attempts == 1
    # a second worker (another connection) gets the next job, never the same one
    other = JobQueue(store.connect(tmp_path / "state")).claim()
    assert other is not None and other.id == b.id
    assert queue.claim() is None
    assert queue.recover() == 2  # the process holding them was killed
    assert {j.state for j in queue.jobs()} == {PENDING}


@pytest.mark.req("SRS-SVC-003")
def test_retries_back_off_exponentially_then_fail_with_the_reason(queue: JobQueue) -> None:
    queue.enqueue("1.1", instances("1.1.1"), "dicomweb")
    delays = []
    for attempt in range(1, 4):
        job = queue.claim()
        if job is None:  # not due yet: make it due and note the delay that was set
            row = queue.db.execute("SELECT next_attempt FROM jobs").fetchone()
            delays.append(row["next_attempt"] - time.time())
            queue.db.execute("UPDATE jobs SET next_attempt = 0")
            job = queue.claim()
        assert job is not None and job.attempts == attempt
        job = queue.retry_later(job, "DICOMweb retrieve failed (ConnectionError)", {"event": "analysis"})
    assert job.state == FAILED and "gave up after 3 attempts" in (job.reason or "")
    assert [round(d) for d in delays] == [10, 20]
    assert RetryPolicy(base_seconds=10.0, max_seconds=25.0).delay(3) == 25.0
    (record,) = audit.records(queue.db)
    assert record["state"] == FAILED and record["job_id"] == job.id


@pytest.mark.req("SRS-SVC-005")
def test_a_larger_instance_set_supersedes_the_earlier_jobs(queue: JobQueue) -> None:
    first, _ = queue.enqueue("1.1", instances("1.1.1", "1.1.2"), "dicomweb")
    job = queue.claim()
    assert job is not None
    queue.finish(job, DONE, {"event": "analysis"}, outputs={"sr_path": "x"})
    waiting, _ = queue.enqueue("1.1", instances("1.1.1", "1.1.2", "1.1.3"), "dicomweb")
    latest, _ = queue.enqueue("1.1", instances("1.1.1", "1.1.2", "1.1.3", "1.1.4"), "dicomweb")
    assert queue.get(waiting.id).state == SUPERSEDED  # type: ignore[union-attr]
    claimed = queue.claim()
    assert claimed is not None and claimed.id == latest.id
    assert queue.latest_done("1.1", latest.id).id == first.id  # type: ignore[union-attr]
    finished = queue.finish(claimed, DONE, {"event": "analysis"})
    assert finished.state == DONE
    old = queue.get(first.id)
    assert old is not None and old.state == SUPERSEDED and old.superseded_by == latest.id
    assert audit.records(queue.db)[-1]["supersedes_jobs"] == [first.id]


@pytest.mark.req("SRS-SVC-007")
def test_finish_and_requeue_are_audited_in_a_verifiable_chain(queue: JobQueue) -> None:
    queue.enqueue("1.1", instances("1.1.1"), "dicomweb")
    job = queue.claim()
    assert job is not None
    queue.finish(job, DONE, {"event": "analysis", "study_uid": "1.1"})
    requeued = queue.requeue(job.id, "api-token")
    assert requeued.state == PENDING and requeued.attempts == 0
    events = [r["event"] for r in audit.records(queue.db)]
    assert events == ["analysis", "requeued"]
    result = audit.verify(queue.db)
    assert result.intact and result.records == 2 and len(result.head_sha256) == 64
    with pytest.raises(ValueError, match="done or failed"):
        queue.finish(requeued, SUPERSEDED, {})


@pytest.mark.req("SRS-SVC-002")
def test_one_process_per_state_folder(tmp_path: Path) -> None:
    held = store.lock_state(tmp_path)
    with pytest.raises(store.StateLockedError, match="another `cad serve` process"):
        store.lock_state(tmp_path)
    held.close()
    store.lock_state(tmp_path).close()


@pytest.mark.req("SRS-OUT-007")
def test_a_job_waiting_for_space_uses_up_no_attempt_and_is_never_failed(queue: JobQueue) -> None:
    """No space left is the machine's condition: however often it recurs, the job stays queued."""
    job, _ = queue.enqueue("2.25.9", instances("2.25.91"), "watch")
    for _ in range(queue.retry.max_attempts + 2):  # more often than PACS errors would be tolerated
        queue.db.execute("UPDATE jobs SET next_attempt = 0")
        running = queue.claim()
        assert running is not None and running.attempts == 1
        waiting = queue.wait(running, "outputs cannot be stored: no space left on device")
        assert waiting.state == PENDING and waiting.attempts == 0
        assert waiting.reason == "outputs cannot be stored: no space left on device"
        assert queue.claim() is None, "not tried again before its delay"
    assert queue.counts()[FAILED] == 0 and not list(audit.records(queue.db)), "nothing finished, nothing audited"


@pytest.mark.req("SRS-SVC-002", "SRS-BAT-001")
def test_the_batch_ledger_and_the_service_queue_name_an_instance_set_alike() -> None:
    """One identity of a study's instance set for both exactly-once stores: any order, repeats
    ignored; one more image is another set."""
    from cad.batch.discover import StudyWork

    sops = ("2.25.3", "2.25.1", "2.25.2")
    service = instances_sha256(instances(*sops, "2.25.1"))
    batch = StudyWork("2.25.9", ("c", "a", "b"), tuple(sorted(sops))).instances_sha256
    assert service == batch == instances_sha256(instances(*reversed(sops)))
    assert instances_sha256(instances(*sops, "2.25.4")) != service
