"""Input drift per acquisition device: header facts and the model input's distribution (SRS-SVC-016)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from cad.analysis.pipeline import AnalysedView
from cad.detect.config import DetectorConfig
from cad.detect.inputs import prepare_view
from cad.detect.postprocess import ViewDetections
from cad.io import load
from cad.service import alerts, input_drift, store
from cad.service.alerts import AlertMonitor
from cad.service.queue import JobQueue
from cad.service.settings import AlertSettings, MonitoringSettings


def _store(connection: sqlite3.Connection, device: str, rows: list[dict[str, float | None]], start: int) -> None:
    for k, facts in enumerate(rows):
        job = start + k
        connection.execute("INSERT OR IGNORE INTO jobs (id, study_uid, instances_sha256, instances, source, state, "
                           "next_attempt, enqueued) VALUES (?, ?, ?, '[]', 'test', 'done', 0, 0)", (job, f"1.2.{job}", str(job)))
        connection.execute("INSERT INTO image_facts (job_id, sop_uid, device, finished, facts) VALUES (?, ?, ?, ?, ?)",
                           (job, f"1.2.{job}.1", device, float(job), json.dumps(facts)))


def _facts(rng: np.random.Generator, count: int, kvp: float, spacing: float) -> list[dict[str, float | None]]:
    return [{"kvp": float(rng.normal(kvp, 1.0)), "exposure_mas": None, "thickness_mm": float(rng.normal(55, 10)),
             "compression_n": None, "pixel_spacing_mm": spacing,
             **{f"input_p{q:02d}": float(rng.normal(q / 50 - 1, 0.05)) for q in input_drift.QUANTILES}}
            for _ in range(count)]


@pytest.mark.req("SRS-SVC-016")
def test_device_names_come_from_the_header_and_never_fail() -> None:
    header = Dataset()
    header.Manufacturer = "ACME"
    header.ManufacturerModelName = "Mammo 3000"
    header.SoftwareVersions = ["1.2", "DET 4"]
    header.KVP = "29"
    assert input_drift.device_of(header) == "ACME / Mammo 3000 / 1.2 DET 4"
    assert input_drift.device_of(None) == "unknown / unknown / unknown"
    assert input_drift.device_of(Dataset()) == "unknown / unknown / unknown"


@pytest.mark.req("SRS-SVC-016")
def test_image_facts_of_a_real_phantom_view(mass_phantom_dir: Path) -> None:
    image = load([mass_phantom_dir]).images[0]
    view = prepare_view(image, DetectorConfig())
    empty = ViewDetections(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0))
    facts = input_drift.image_facts(AnalysedView(image, view, empty))
    assert facts["pixel_spacing_mm"] == pytest.approx(float(image.header.ImagerPixelSpacing[0]))
    assert facts["kvp"] is None, "the phantom writes no kVp: not invented"
    quantiles = [facts[f"input_p{q:02d}"] for q in input_drift.QUANTILES]
    assert quantiles == sorted(quantiles) and quantiles[0] < 0 < quantiles[-1], "normalised input around zero"
    assert input_drift.device_of(image.header).endswith(f"dual-view breast phantom / {image.header.SoftwareVersions}")


@pytest.mark.req("SRS-SVC-016")
def test_a_shifted_device_drifts_an_unchanged_one_does_not_and_a_new_one_is_an_event(tmp_path: Path) -> None:
    connection = store.connect(tmp_path / "state")
    rng = np.random.default_rng(3)
    stable, changed = "ACME / Mammo 3000 / 1.2", "ACME / Mammo 3000 / 2.0"
    _store(connection, stable, _facts(rng, input_drift.BASELINE + input_drift.WINDOW, 29, 0.1), 1)
    assert input_drift.compare(connection, stable) and not any(d.drifting for d in input_drift.compare(connection, stable))
    _store(connection, changed, _facts(rng, input_drift.BASELINE, 29, 0.1), 1000)
    assert input_drift.compare(connection, changed) == [], "nothing is compared before baseline and window are full"
    _store(connection, changed, _facts(rng, input_drift.WINDOW, 31, 0.085), 2000)
    drifting = {d.fact for d in input_drift.compare(connection, changed) if d.drifting}
    assert drifting == {"kvp", "pixel_spacing_mm"}
    monitor = AlertMonitor(MonitoringSettings(alerts=AlertSettings(600, audit_every_seconds=3600)))
    new = monitor.check(JobQueue(connection), {}, {})
    assert sorted(a.key for a in new) == [f"input-drift:{changed}:kvp", f"input-drift:{changed}:pixel_spacing_mm",
                                          f"new-device:{stable}", f"new-device:{changed}"]
    assert all(a.severity == "warning" for a in new)
    kvp = next(a for a in new if a.key.endswith(":kvp"))
    assert "the last 200 images differ from the device's first 200" in kvp.message
    summary = input_drift.summary(connection)
    assert summary[changed]["images"] == 400 and summary[changed]["facts"]["kvp"]["drifting"]
    assert not summary[stable]["facts"]["kvp"]["drifting"]
    assert {a.key for a in alerts.alerts(connection)} == {a.key for a in new}
