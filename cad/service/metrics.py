"""`/metrics` of `cad serve` in the Prometheus exposition format (prometheus-client).

Two kinds of figures: counters and histograms of this process (studies ended, images analysed
and not, CAD marks, seconds per study and per stage, queue wait), which restart at zero with
the process as Prometheus expects; and gauges read from the state database at each scrape
(jobs per queue state, the oldest waiting job, unresolved alerts per kind and severity), which
survive restarts because the database does. No label carries a UID or anything about a patient.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cad.service import store
from cad.service.queue import STATES, JobQueue
from cad.stages import Stage, StageClock

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: seconds: from a fraction of a second (one stage) to the RC-029 latency limits (minutes)
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class _StateCollector(Collector):
    """Gauges from the state database, read at each scrape on a connection of its own."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        from cad.service.alerts import open_counts

        jobs = GaugeMetricFamily("cad_queue_jobs", "Jobs in the queue by state", labels=["state"])
        oldest = GaugeMetricFamily("cad_queue_oldest_pending_seconds",
                                   "Age of the oldest job waiting to run (0 when none waits)")
        alerts = GaugeMetricFamily("cad_alerts_open", "Alerts neither acknowledged nor resolved",
                                   labels=["kind", "severity"])
        with closing(store.connect(self.state)) as connection:
            queue = JobQueue(connection)
            counts = queue.counts()
            for state in STATES:
                jobs.add_metric([state], counts.get(state, 0))
            first = queue.oldest_pending()
            oldest.add_metric([], max(0.0, time.time() - first) if first is not None else 0.0)
            for (kind, severity), count in sorted(open_counts(connection).items()):
                alerts.add_metric([kind, severity], count)
        yield jobs
        yield oldest
        yield alerts


class ServiceMetrics:
    """The service's metrics registry: the worker reports each finished job to it."""

    def __init__(self, state: Path) -> None:
        self.registry = CollectorRegistry()
        self.studies = Counter("cad_studies", "Studies whose job ended, by end state (done, failed)", ["state"],
                               registry=self.registry)
        self.images = Counter("cad_images", "Images of finished studies, analysed or not analysed", ["status"],
                              registry=self.registry)
        self.marks = Counter("cad_marks", "CAD marks at the operating point in finished studies",
                             registry=self.registry)
        self.study_seconds = Histogram("cad_study_seconds", "Seconds from claiming a job to its end",
                                       buckets=BUCKETS, registry=self.registry)
        self.stage_seconds = Histogram("cad_stage_seconds", "Seconds per analysis stage of a study", ["stage"],
                                       buckets=BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("cad_queue_wait_seconds", "Seconds a study waited in the queue before it ran",
                                    buckets=BUCKETS, registry=self.registry)
        self.alerts = Counter("cad_alerts_raised", "Alerts raised (new, not repeats), by kind", ["kind"],
                              registry=self.registry)
        self.registry.register(_StateCollector(state))

    def job_finished(self, state: str, record: dict[str, Any], clock: StageClock | None = None) -> None:
        """Count one job that ended ``state`` with its audit ``record`` (and stage times)."""
        self.studies.labels(state).inc()
        self.images.labels("analysed").inc(int(record.get("images_analysed", 0)))
        self.images.labels("not_analysed").inc(int(record.get("images_not_analysed", 0)))
        self.marks.inc(int(record.get("marks_at_operating_point", 0)))
        if "seconds" in record:
            self.study_seconds.observe(float(record["seconds"]))
        if "queue_latency_s" in record:
            self.queue_wait.observe(max(0.0, float(record["queue_latency_s"])))
        if clock is not None:
            for stage in Stage:
                if clock.seconds[stage]:
                    self.stage_seconds.labels(stage.value).observe(clock.seconds[stage])

    def alert_raised(self, kind: str) -> None:
        self.alerts.labels(kind).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
