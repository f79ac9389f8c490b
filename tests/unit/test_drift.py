"""Output drift: EWMA charts of batch means of the CAD's per-study output (SRS-SVC-014)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cad.service import alerts, drift, store
from cad.service.alerts import AlertMonitor
from cad.service.queue import JobQueue
from cad.service.settings import AlertSettings, MonitoringSettings


def _facts(rng: np.random.Generator, count: int, marks_mean: float) -> list[drift.OutputFacts]:
    marks = rng.poisson(marks_mean, count)
    return [drift.OutputFacts(float(m), float(m > 0), float(rng.uniform(0.2, 0.8)), float(rng.uniform(0, 0.3)), 0.0,
                              float(rng.normal(1.0, 0.1))) for m in marks]


@pytest.mark.req("SRS-SVC-014")
def test_the_chart_is_the_textbook_ewma_of_batch_means() -> None:
    assert drift.batch_means([1, 2, 3, 4, 5], 2) == [1.5, 3.5]  # the partial group waits
    reference = drift.Reference(0.0, 1.0)
    path = drift.chart_path([1.0, 1.0], reference, lam=0.1, width=4.0)
    assert path[0][0] == pytest.approx(0.1) and path[1][0] == pytest.approx(0.19)
    assert path[0][2] == pytest.approx(4.0 * math.sqrt(0.1 / 1.9 * (1 - 0.9 ** 2)))
    steady = drift.chart_path([0.0] * 500, reference, lam=0.1, width=4.0)[-1]
    assert steady[2] == pytest.approx(4.0 * math.sqrt(0.1 / 1.9))  # the asymptotic limit
    per_study = drift.batch_reference([0.0, 2.0] * 50, 20)
    assert per_study is not None and per_study.sd == pytest.approx(np.std([0.0, 2.0] * 50, ddof=1) / math.sqrt(20))
    assert drift.reference_of([1.0] * 10) is None, "a constant baseline cannot be charted"


@pytest.mark.req("SRS-SVC-014")
def test_charts_start_after_the_site_baseline_and_flag_a_shift() -> None:
    rng = np.random.default_rng(7)
    baseline = _facts(rng, drift.BASELINE, 1.0)
    assert all(s.reference is None for s in drift.chart_states(baseline[:-1]))
    unchanged = drift.chart_states(baseline + _facts(rng, 2000, 1.0))
    assert not any(s.out_of_control for s in unchanged)
    marks = {s.fact: s for s in drift.chart_states(baseline + _facts(rng, 200, 2.0))}["marks"]
    assert marks.out_of_control and marks.ewma is not None and marks.upper is not None and marks.ewma > marks.upper


@pytest.mark.req("SRS-SVC-014")
def test_the_service_raises_and_resolves_an_output_drift_alert(tmp_path: Path) -> None:
    connection = store.connect(tmp_path / "state")
    queue, monitor = JobQueue(connection), AlertMonitor(
        MonitoringSettings(alerts=AlertSettings(600, audit_every_seconds=3600, monitor_every_seconds=0)))
    rng = np.random.default_rng(11)
    stream = _facts(rng, drift.BASELINE + 400, 1.0) + _facts(rng, 200, 3.0)
    for n, facts in enumerate(stream):
        connection.execute("INSERT INTO jobs (id, study_uid, instances_sha256, instances, source, state, next_attempt, "
                           "enqueued) VALUES (?, ?, ?, '[]', 'test', 'done', 0, 0)", (n + 1, f"1.2.{n}", f"{n}"))
        drift.record(connection, n + 1, f"1.2.{n}", float(n), facts)
    new = monitor.check(queue, {}, {})
    # three times the marks: more marks, and more studies with any mark
    assert sorted(a.key for a in new) == ["output-drift:any_mark", "output-drift:marks"]
    marks = next(a for a in new if a.key == "output-drift:marks")
    assert marks.message.startswith("marks: moving average") and marks.severity == "warning"
    for n, facts in enumerate(_facts(rng, 800, 1.0), start=len(stream)):
        connection.execute("INSERT INTO jobs (id, study_uid, instances_sha256, instances, source, state, next_attempt, "
                           "enqueued) VALUES (?, ?, ?, '[]', 'test', 'done', 0, 0)", (n + 1, f"1.2.{n}", f"{n}"))
        drift.record(connection, n + 1, f"1.2.{n}", float(n), facts)
    assert monitor.check(queue, {}, {}) == []
    assert {a.key: a.state for a in alerts.alerts(connection)} == {"output-drift:marks": "resolved",
                                                                   "output-drift:any_mark": "resolved"}


@pytest.mark.req("SRS-SVC-014")
def test_the_baseline_stays_the_sites_first_studies_however_long_it_runs(tmp_path: Path) -> None:
    connection = store.connect(tmp_path / "state")
    rng = np.random.default_rng(5)
    stream = _facts(rng, 40, 5.0) + _facts(rng, 200, 1.0)
    for n, facts in enumerate(stream):
        connection.execute("INSERT INTO jobs (id, study_uid, instances_sha256, instances, source, state, next_attempt, "
                           "enqueued) VALUES (?, ?, ?, '[]', 'test', 'done', 0, 0)", (n + 1, f"1.2.{n}", f"{n}"))
        drift.record(connection, n + 1, f"1.2.{n}", float(n), facts)
    bounded = drift.history(connection, baseline=40, recent=100)
    assert bounded[:40] == stream[:40] and bounded[40:] == stream[-100:], "first 40, then the latest 100"
    assert drift.history(connection, baseline=40, recent=10_000) == stream, "no study twice"
