"""Monitoring thresholds from a TOML file (SRS-SVC-018) and the validation reference shipped
beside the model (SRS-SVC-019)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from cad.detect.locked import ModelIntegrityError, default_model_dir, load_locked_model
from cad.service import drift, input_drift, reference, store
from cad.service.alerts import AlertMonitor
from cad.service.queue import JobQueue
from cad.service.settings import AlertSettings, MonitoringSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "monitoring.toml"


@pytest.mark.req("SRS-SVC-018")
def test_the_documented_example_is_exactly_the_defaults() -> None:
    loaded = load_settings(EXAMPLE)
    assert loaded.source == str(EXAMPLE)
    assert loaded.public() == {**MonitoringSettings().public(), "source": str(EXAMPLE)}


@pytest.mark.req("SRS-SVC-018")
def test_a_site_file_sets_thresholds_and_the_command_line_wins(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.toml"
    path.write_text('[alerts]\nlate_after_seconds = 120\n[output_drift]\nwidth_sd = 3\nreference = "model"\n'
                    '[input_drift]\nreference = "site"\n[performance]\nsensitivity_floor = 0.8\nmin_cancers = 30\n')
    settings = load_settings(path)
    assert settings.output_drift.reference == "model" and settings.input_drift.reference == "site"
    assert settings.alerts.late_after_seconds == 120.0
    assert settings.output_drift.width_sd == 3.0 and settings.output_drift.batch_studies == 20
    assert settings.performance.sensitivity_floor == 0.8 and settings.performance.min_cancers == 30
    overridden = settings.with_overrides(late_after_seconds=60, sensitivity_floor=None)
    assert overridden.alerts.late_after_seconds == 60 and overridden.performance.sensitivity_floor == 0.8


@pytest.mark.req("SRS-SVC-018")
@pytest.mark.parametrize(("text", "message"), [
    ("[alerts]\nlate_after = 10\n", "[alerts] late_after: unknown setting"),
    ("[alarms]\n", "unknown setting 'alarms'"),
    ("[output_drift]\nbatch_studies = 2.5\n", "[output_drift] batch_studies: expected an integer"),
    ("[output_drift]\nwidth_sd = \"4\"\n", "[output_drift] width_sd: expected a number"),
    ("[input_drift]\np_value = 1.5\n", "input_drift.p_value: a probability in (0, 1)"),
    ("[output_drift]\nbaseline_studies = 30\n", "output_drift.baseline_studies: at least two batches"),
    ('[output_drift]\nreference = "vendor"\n', "output_drift.reference: use one of model, site"),
    ("[input_drift]\nreference = 1\n", "[input_drift] reference: expected a string"),
    ('reference = "model"\n', "unknown setting 'reference'"),
    ("[performance]\nsensitivity_floor = true\n", "sensitivity_floor: expected a number"),
    ("[alerts\n", "not valid TOML"),
], ids=["unknown-key", "unknown-section", "float-for-integer", "string-for-number", "p-value-range", "baseline-size",
        "unknown-reference", "string-reference-type", "top-level-reference", "boolean-for-number", "bad-toml"])
def test_a_wrong_file_is_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "monitoring.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="cannot be read"):
        load_settings(tmp_path / "absent.toml")


def _model_copy(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model, ignore=shutil.ignore_patterns("*.onnx"))
    return model


@pytest.mark.req("SRS-SVC-019")
def test_the_released_model_ships_a_verified_reference() -> None:
    found = reference.load_reference(load_locked_model())
    assert found is not None and found.studies >= 200 and found.images == 4 * found.studies
    assert "seconds" not in found.output, "processing time depends on the site's machine"
    assert {"marks", "max_score", "linked_fraction"} <= set(found.output)
    assert "any_mark" not in found.output, "every validation study has a mark: no spread, judged against the site"
    assert "pixel_spacing_mm" in found.inputs and "kvp" not in found.inputs, "the phantom records no kVp"
    assert found.devices == ("mammo-cad phantom generator / dual-view breast phantom / 0.3.0",)
    assert all(len(v) >= 20 for v in found.inputs.values())


@pytest.mark.req("SRS-SVC-019")
def test_a_changed_or_missing_reference_stops_the_model(tmp_path: Path) -> None:
    model = _model_copy(tmp_path)
    path = model / reference.REFERENCE_FILE
    content = json.loads(path.read_text())
    content["output"]["marks"]["mean"] += 1.0
    path.write_text(json.dumps(content))
    with pytest.raises(ModelIntegrityError, match="monitoring reference does not match the manifest"):
        reference.load_reference(load_locked_model(model))
    path.unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        reference.load_reference(load_locked_model(model))


@pytest.mark.req("SRS-SVC-019")
def test_build_write_and_read_back_a_reference(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    outputs = [drift.OutputFacts(float(m), float(m > 0), float(rng.uniform()), 0.5, 0.0, 1.0)
               for m in rng.poisson(1.0, 200)]
    images = [{"kvp": None, "pixel_spacing_mm": 0.1, "input_p50": float(rng.normal())} for _ in range(800)]
    content = reference.build_reference(outputs, images, "test set")
    marks = [o.marks for o in outputs]
    assert content["output"]["marks"]["mean"] == pytest.approx(np.mean(marks), abs=1e-6)
    assert content["output"]["marks"]["sd"] == pytest.approx(np.std(marks, ddof=1), abs=1e-6)
    assert "seconds" not in content["output"] and "linked_fraction" not in content["output"], "no spread: left out"
    assert set(content["inputs"]) == {"input_p50", "pixel_spacing_mm"}, "absent facts are left out"
    model = _model_copy(tmp_path)
    entry = reference.write_reference(model, content)
    read = reference.load_reference(load_locked_model(model))
    assert read is not None and read.sha256 == entry["sha256"] and read.studies == 200 and read.images == 800
    assert load_locked_model(model).settings_sha256 == load_locked_model().settings_sha256, "outputs unchanged"


def _image_rows(connection: sqlite3.Connection, device: str, values: list[float]) -> None:
    for k, value in enumerate(values):
        connection.execute("INSERT OR IGNORE INTO jobs (id, study_uid, instances_sha256, instances, source, state, "
                           "next_attempt, enqueued) VALUES (?, ?, ?, '[]', 'test', 'done', 0, 0)", (k + 1, f"1.{k}", str(k)))
        connection.execute("INSERT INTO image_facts (job_id, sop_uid, device, finished, facts) VALUES (?, ?, ?, ?, ?)",
                           (k + 1, f"1.{k}.1", device, float(k), json.dumps({"input_p50": value, "kvp": 28.0 + k % 3})))


@pytest.mark.req("SRS-SVC-019")
def test_input_drift_against_the_model_reference_needs_no_site_baseline(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    model_sample = {"input_p50": tuple(sorted(rng.normal(0.0, 1.0, 800)))}
    connection = store.connect(tmp_path / "state")
    _image_rows(connection, "same", list(rng.normal(0.0, 1.0, 200)))
    known = reference.MonitoringReference("v", 200, 800, {}, model_sample, devices=("same",))
    settings = MonitoringSettings(alerts=AlertSettings(600, audit_every_seconds=3600))
    assert AlertMonitor(settings, reference=known).check(JobQueue(connection), {}, {}) == [], \
        "a device of the validation set is not new, and does not drift"
    unknown = reference.MonitoringReference("v", 200, 800, {}, model_sample, devices=("other",))
    (new,) = AlertMonitor(settings, reference=unknown).check(JobQueue(connection), {}, {})
    assert new.key == "new-device:same"
    (same,) = [d for d in input_drift.compare(connection, "same", reference=model_sample) if d.fact == "input_p50"]
    assert same.reference == "model" and same.baseline == 800 and not same.drifting
    assert all(d.fact != "kvp" for d in input_drift.compare(connection, "same", reference=model_sample)), \
        "a fact the reference lacks waits for the site baseline"
    connection2 = store.connect(tmp_path / "state2")
    _image_rows(connection2, "brighter", list(rng.normal(0.8, 1.0, 200)))
    (shifted,) = [d for d in input_drift.compare(connection2, "brighter", reference=model_sample)
                  if d.fact == "input_p50"]
    assert shifted.drifting and shifted.distance >= 0.2


@pytest.mark.req("SRS-SVC-019")
def test_output_charts_against_the_model_reference_start_at_the_first_study() -> None:
    rng = np.random.default_rng(3)
    facts = [drift.OutputFacts(float(m), float(m > 0), 0.5, 0.5, 0.0, 1.0) for m in rng.poisson(3.0, 100)]
    model = {"marks": drift.Reference(1.0, 1.0)}
    (marks,) = [s for s in drift.series(facts, references=model) if s.fact == "marks"]
    assert marks.from_model and marks.studies == 100 and len(marks.means) == 5 and marks.state().out_of_control
    (seconds,) = [s for s in drift.series(facts, references=model) if s.fact == "seconds"]
    assert not seconds.from_model and seconds.baseline_needed == 400
