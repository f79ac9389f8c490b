"""RC-029 end to end: a running `cad serve --watch` raises, delivers, lists and acknowledges an
alert for a study it cannot analyse, serves /metrics and records output facts for the drift
charts (SRS-SVC-012, SRS-SVC-013, SRS-SVC-014)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cad.detect.locked import DEFAULT_MODEL_DIR
from cad_tools.orthanc import free_port
from cad_tools.phantom.generate import exam_files_of

CAD = [sys.executable, "-m", "cad.cli"]
TOKEN = "alerts-test-token-not-a-secret"


@pytest.mark.slow
@pytest.mark.req("SRS-SVC-012", "SRS-SVC-013", "SRS-SVC-014")
def test_a_study_without_a_result_is_alerted_delivered_and_acknowledged(
        phantom_dir: Path, webhook: tuple[str, list[dict[str, Any]]], tmp_path: Path,
        until: Callable[..., Any]) -> None:
    url, received = webhook
    inbox = tmp_path / "inbox"
    good, broken = inbox / "good", inbox / "broken"
    good.mkdir(parents=True)
    broken.mkdir()
    for path in exam_files_of(phantom_dir)[0]:
        (good / path.name).write_bytes(path.read_bytes())
    for path in exam_files_of(phantom_dir)[1]:  # every image cut to a third: nothing can be analysed
        data = path.read_bytes()
        (broken / path.name).write_bytes(data[: len(data) // 3])
    (tmp_path / "token").write_text(TOKEN + "\n")
    port, state = free_port(), tmp_path / "state"
    process = subprocess.Popen(
        [*CAD, "serve", "--state", str(state), "--watch", str(inbox), "--quiet-seconds", "0.5", "--poll-seconds", "0.5",
         "--api", f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token"), "--alert-webhook", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
    try:
        listed = until(lambda: [a for a in requests.get(f"{base}/alerts", headers=auth, timeout=5).json()["alerts"]
                                 if a["kind"] == "study-failed"])
        (alert,) = listed
        assert alert["severity"] == "critical" and alert["state"] == "open" and "no CAD result" in alert["message"]
        assert "corrupt" in alert["message"] or "could be analysed" in alert["message"]
        delivered = until(lambda: [m for m in received if m["alert"]["id"] == alert["id"]])
        assert len(delivered) == 1 and delivered[0]["service"]["model_sha256"]
        assert requests.get(f"{base}/alerts", timeout=5).status_code == 401
        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401
        assert requests.post(f"{base}/alerts/{alert['id']}/acknowledge", json={"by": "qa", "note": "x"},
                             timeout=5).status_code == 401

        def finished() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            text = requests.get(f"{base}/metrics", headers=auth, timeout=5).text
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for family in text_string_to_metric_families(text) for s in family.samples}
            done = samples.get(("cad_studies_total", (("state", "done"),)), 0)
            return samples if done == 1 and samples.get(("cad_studies_total", (("state", "failed"),))) == 1 else None

        samples = until(finished)
        assert samples[("cad_queue_jobs", (("state", "failed"),))] == 1
        assert samples[("cad_alerts_open", (("kind", "study-failed"), ("severity", "critical")))] == 1
        assert samples[("cad_alerts_raised_total", (("kind", "study-failed"),))] == 1
        devices = requests.get(f"{base}/inputs", headers=auth, timeout=5).json()["devices"]
        assert [d["images"] for d in devices.values()] == [4], "one device, the good study's four images"
        assert samples[("cad_images_total", (("status", "analysed"),))] == 4
        assert samples[("cad_stage_seconds_count", (("stage", "decode"),))] == 2  # one per finished study

        acknowledged = requests.post(f"{base}/alerts/{alert['id']}/acknowledge", headers=auth, timeout=5,
                                     json={"by": "QA physicist on duty", "note": "files re-sent from the modality"})
        assert acknowledged.status_code == 200 and acknowledged.json()["state"] == "acknowledged"
        assert requests.post(f"{base}/alerts/999/acknowledge", headers=auth, json={"by": "qa", "note": "x"},
                             timeout=5).status_code == 404
        assert requests.post(f"{base}/alerts/{alert['id']}/acknowledge", headers=auth, json={"by": "", "note": "x"},
                             timeout=5).status_code == 422
        verify = requests.get(f"{base}/audit/verify", headers=auth, timeout=5).json()
        assert verify["intact"]
        output_drift = requests.get(f"{base}/drift", headers=auth, timeout=5).json()
        charts = output_drift["charts"]
        assert set(charts) == {"marks", "any_mark", "max_score", "linked_fraction", "not_analysed_fraction", "seconds"}
        # by default output drift waits for the site's own baseline (docs/service.md, Output drift)
        assert output_drift["reference"] == "site" and output_drift["from_model"] == []
        assert all(c["reference"] is None and not c["out_of_control"] for c in charts.values()), "baseline not reached"
        inputs = requests.get(f"{base}/inputs", headers=auth, timeout=5).json()
        assert inputs["reference"] == "model", "input drift is judged against the validation images"
        about = requests.get(f"{base}/about", headers=auth, timeout=5).json()
        assert about["runtime"] == "onnxruntime" and len(about["model_sha256"]) == 64
        manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
        assert about["monitoring_reference"]["sha256"] == manifest["monitoring"]["sha256"]
        assert about["monitoring"]["alerts"]["late_after_seconds"] == 900.0 and about["monitoring"]["source"] is None
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "ALERT study-failed" in stderr and TOKEN not in stderr
    from cad.service import audit, store

    records = audit.records(store.connect(state))
    acks = [r for r in records if r["event"] == "alert_acknowledged"]
    assert len(acks) == 1 and acks[0]["by"] == "QA physicist on duty" and acks[0]["note"].startswith("files re-sent")
    raised = sorted(r["key"].split(":")[0] for r in records if r["event"] == "alert_raised")
    assert raised == ["study-failed"], "the failed study; the phantom's device is in the model's validation set: not new"
    facts = {row["job_id"]: json.loads(row["facts"]) for row in store.connect(state).execute("SELECT * FROM study_facts")}
    assert sorted(f["not_analysed_fraction"] for f in facts.values()) == [0.0, 1.0], "both studies' outputs recorded"


@pytest.mark.req("SRS-SVC-018", "SRS-SVC-019")
def test_serve_refuses_a_wrong_settings_file_and_a_changed_reference(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = tmp_path / "monitoring.toml"
    settings.write_text("[output_drift]\nwidht_sd = 3.0\n")
    serve = [*CAD, "serve", "--state", str(tmp_path / "state"), "--watch", str(inbox), "--once"]
    wrong = subprocess.run([*serve, "--monitoring", str(settings)], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [f"error: {settings}: [output_drift] widht_sd: unknown setting "
                                                 "(known: reference, ewma_lambda, width_sd, baseline_studies, batch_studies)"]
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model, ignore=shutil.ignore_patterns("detector-int8.onnx"))
    reference = model / "monitoring-reference.json"
    reference.write_text(reference.read_text().replace('"studies": 200', '"studies": 201'))
    changed = subprocess.run([*serve, "--model", str(model)], capture_output=True, text=True, timeout=120)
    assert changed.returncode == 3, changed.stderr
    assert "monitoring reference does not match the manifest" in changed.stderr and "Traceback" not in changed.stderr
