"""`cad serve` against a real Orthanc PACS (Debian orthanc + orthanc-dicomweb) on loopback.

Every test starts its own Orthanc with its own storage and ports, loads phantom exams into it,
runs the service as a separate process (as a site would) and checks what reached the PACS, the
queue and the audit log (SRS-SVC-*).
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from cad.detect.locked import DEFAULT_MODEL_DIR
from cad_tools.orthanc import Orthanc, free_port, orthanc_available
from cad_tools.phantom.generate import exam_files_of

pytestmark = pytest.mark.skipif(orthanc_available() is not None,
                                reason=f"Orthanc {orthanc_available()}; `make test` installs it")

CAD = [sys.executable, "-m", "cad.cli"]
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.50"
PR_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"


def serve(state: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAD, "-v", "serve", "--state", str(state), "--poll-seconds", "0.5", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    with Orthanc(tmp_path / "orthanc") as orthanc:
        yield orthanc


def jobs(state: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(state / "cad-service.sqlite")
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY id")]


def audit_records(state: Path, alerts: bool = False) -> list[dict[str, Any]]:
    """The audit records, without the alerts' own records unless asked (tests/integration/test_alerts.py)."""
    db = sqlite3.connect(state / "cad-service.sqlite")
    records = [json.loads(r[0]) for r in db.execute("SELECT record FROM audit ORDER BY seq")]
    return [r for r in records if alerts or not r["event"].startswith("alert_")]


def study_uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


@pytest.mark.req("SRS-SVC-001", "SRS-SVC-007", "SRS-SVC-009")
def test_once_analyses_each_study_and_stores_sr_and_gsps_in_it(pacs: Orthanc, phantom_dir: Path,
                                                               tmp_path: Path) -> None:
    exams = [exam_files_of(phantom_dir)[0], exam_files_of(phantom_dir)[1]]
    pacs.upload([p for exam in exams for p in exam])
    state = tmp_path / "state"
    result = serve(state, "--dicomweb", pacs.dicomweb, "--once")
    assert result.returncode == 0, result.stderr
    finished = jobs(state)
    assert [j["state"] for j in finished] == ["done", "done"]
    for exam in exams:
        uid = study_uid_of(exam[0])
        (sr,) = pacs.instances(uid, SR_CLASS)
        assert sr.StudyInstanceUID == uid
        evidence = {ref.ReferencedSOPInstanceUID for item in sr.CurrentRequestedProcedureEvidenceSequence
                    for series in item.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
        assert evidence == {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in exam}
        assert pacs.instances(uid, PR_CLASS), "a presentation state is stored too"
    records = audit_records(state)
    assert [r["event"] for r in records] == ["analysis", "analysis"]
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert {r["model"]["sha256"] for r in records} == {manifest["weights"]["sha256"]}
    assert all(len(r["instances"]) == 4 and r["outputs"]["sr_sop_instance_uid"] for r in records)
    # SRS-SVC-009: nothing identifying in the verbose log
    header = pydicom.dcmread(exams[0][0], stop_before_pixels=True)
    for secret in (str(header.PatientName), str(header.PatientID), study_uid_of(exams[0][0])):
        assert secret not in result.stderr and secret not in result.stdout
    # a second run finds nothing new: exactly once
    again = serve(state, "--dicomweb", pacs.dicomweb, "--once")
    assert again.returncode == 0, again.stderr
    assert len(jobs(state)) == 2 and len(audit_records(state)) == 2
    verify = subprocess.run([*CAD, "audit", "verify", "--state", str(state)], capture_output=True, text=True)
    # the two analyses; no new-device alert: the phantom's device is in the model's validation set
    records = len(audit_records(state, alerts=True))
    assert records == 2 and verify.returncode == 0 and f"{records} records" in verify.stdout and "intact" in verify.stdout


@pytest.mark.req("SRS-SVC-002")
@pytest.mark.slow
def test_a_killed_service_resumes_without_loss_or_duplicates(pacs: Orthanc, tmp_path: Path) -> None:
    from cad_tools.phantom.generate import generate

    generate(tmp_path / "exams", exams=4, seed=77)
    pacs.upload(sorted((tmp_path / "exams").glob("exam*/*.dcm")))
    state = tmp_path / "state"
    process = subprocess.Popen([*CAD, "serve", "--state", str(state), "--dicomweb", pacs.dicomweb,
                                "--poll-seconds", "0.5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # kill in the middle of the second study
            try:
                states = [j["state"] for j in jobs(state)]
            except sqlite3.OperationalError:  # the service has not created its database yet
                states = []
            if states.count("done") >= 1 and "running" in states:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the service never got to its second study")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert "running" in [j["state"] for j in jobs(state)], "killed with a study in hand"
    result = serve(state, "--dicomweb", pacs.dicomweb, "--once")
    assert result.returncode == 0, result.stderr
    assert "put back in the queue" in result.stderr
    finished = jobs(state)
    assert len(finished) == 4 and {j["state"] for j in finished} == {"done"}
    analyses = [r for r in audit_records(state) if r["event"] == "analysis"]
    assert sorted(r["study_uid"] for r in analyses) == sorted(j["study_uid"] for j in finished)
    for job in finished:
        assert len(pacs.instances(job["study_uid"], SR_CLASS)) == 1


@pytest.mark.req("SRS-SVC-003", "SRS-SVC-012")
def test_pacs_errors_are_retried_then_the_job_fails_with_the_reason(tmp_path: Path) -> None:
    from cad.service import store
    from cad.service.queue import Instance, JobQueue

    state = tmp_path / "state"
    JobQueue(store.connect(state)).enqueue("1.2.3.4", [Instance("1.2.3.4.1", "1.2.3.4.1.1")], "dicomweb")
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"
    started = time.monotonic()
    result = serve(state, "--dicomweb", dead, "--once", "--max-attempts", "3", "--retry-seconds", "0.2")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "dicomweb: could not be reached at the last poll" in result.stderr
    (job,) = jobs(state)
    assert job["state"] == "failed" and job["attempts"] == 3
    assert "DICOMweb" in job["reason"] and "gave up after 3 attempts" in job["reason"]
    assert elapsed >= 0.2 + 0.4, "backoff doubles between attempts"
    records = audit_records(state, alerts=True)
    (record,) = [r for r in records if not r["event"].startswith("alert_")]
    assert record["state"] == "failed" and record["attempt"] == 3
    # RC-029: the failed study and the unreachable PACS are alerts (SRS-SVC-012)
    assert sorted(r["key"] for r in records if r["event"] == "alert_raised") == [
        "not-ready:source_dicomweb", f"study-failed:{job['id']}"]


@pytest.mark.req("SRS-SVC-004")
def test_a_study_that_cannot_be_analysed_fails_and_still_gets_its_sr(pacs: Orthanc, mass_phantom_dir: Path,
                                                                     tmp_path: Path) -> None:
    broken = []
    for k, path in enumerate(exam_files_of(mass_phantom_dir)[0][:2]):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2.1"  # For Processing
        ds.PresentationIntentType = "FOR PROCESSING"
        out = tmp_path / f"processing{k}.dcm"
        ds.save_as(out, enforce_file_format=True)
        broken.append(out)
    pacs.upload(broken)
    state = tmp_path / "state"
    result = serve(state, "--dicomweb", pacs.dicomweb, "--once")
    assert result.returncode == 1
    (job,) = jobs(state)
    assert job["state"] == "failed" and job["reason"].startswith("no image could be analysed")
    (sr,) = pacs.instances(study_uid_of(broken[0]), SR_CLASS)
    from cad.report.sr.reader import findings_from_sr

    reported = findings_from_sr(sr)
    assert {i.status for i in reported.images} == {"not_analyzed"}
    assert all(i.reason for i in reported.images) and not reported.findings


@pytest.mark.req("SRS-SVC-005", "SRS-DCM-008")
def test_new_images_are_analysed_again_and_supersede_the_first_result(pacs: Orthanc, mass_phantom_dir: Path,
                                                                      tmp_path: Path) -> None:
    paths = exam_files_of(mass_phantom_dir)[0]
    pacs.upload(paths[:3])
    state = tmp_path / "state"
    assert serve(state, "--dicomweb", pacs.dicomweb, "--once").returncode == 0
    first = pacs.instances(study_uid_of(paths[0]), SR_CLASS)
    assert len(first) == 1
    pacs.upload(paths[3:])
    result = serve(state, "--dicomweb", pacs.dicomweb, "--once")
    assert result.returncode == 0, result.stderr
    old, new = jobs(state)
    assert old["state"] == "superseded" and old["superseded_by"] == new["id"] and new["state"] == "done"
    srs = pacs.instances(study_uid_of(paths[0]), SR_CLASS)
    (latest,) = [sr for sr in srs if sr.SOPInstanceUID != first[0].SOPInstanceUID]
    predecessors = {ref.ReferencedSOPInstanceUID for item in latest.PredecessorDocumentsSequence
                    for series in item.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert predecessors == {first[0].SOPInstanceUID}
    assert audit_records(state)[-1]["supersedes_jobs"] == [old["id"]]
    # the current presentation states are told from the superseded ones at the workstation (RC-034)
    states = pacs.instances(study_uid_of(paths[0]), PR_CLASS)
    labels = {str(pr.ContentLabel) for pr in states}
    assert labels == {"CAD_MARKS", "CAD_MARKS_V2"}, labels
    for pr in states:
        if pr.ContentLabel == "CAD_MARKS_V2":
            assert str(pr.ContentDescription).startswith("Result 2, replaces earlier CAD marks")


@pytest.mark.req("SRS-SVC-008", "SRS-SVC-007")
def test_api_requires_the_token_and_can_requeue(pacs: Orthanc, mass_phantom_dir: Path, tmp_path: Path) -> None:
    pacs.upload(exam_files_of(mass_phantom_dir)[0])
    uid = study_uid_of(exam_files_of(mass_phantom_dir)[0][0])
    token = "s3cret-token-for-tests-only"
    (tmp_path / "token").write_text(token + "\n")
    port = free_port()
    state = tmp_path / "state"
    process = subprocess.Popen([*CAD, "serve", "--state", str(state), "--dicomweb", pacs.dicomweb,
                                "--poll-seconds", "0.5", "--api", f"127.0.0.1:{port}", "--token-file",
                                str(tmp_path / "token")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        assert requests.get(f"{base}/health", timeout=5).json()["status"] == "ok"
        assert requests.get(f"{base}/studies", timeout=5).status_code == 401
        assert requests.get(f"{base}/studies", headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        assert requests.post(f"{base}/studies/{uid}/requeue", timeout=5).status_code == 401
        while time.monotonic() < deadline:
            answer = requests.get(f"{base}/studies/{uid}", headers=auth, timeout=5)
            if answer.status_code == 200 and answer.json()["state"] == "done":
                break
            time.sleep(0.3)
        assert answer.json()["state"] == "done"
        ready = requests.get(f"{base}/ready", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"]["source_dicomweb"] is True
        requeued = requests.post(f"{base}/studies/{uid}/requeue", headers=auth, timeout=5)
        assert requeued.status_code == 202 and requeued.json()["state"] == "pending"
        while time.monotonic() < deadline:
            if requests.get(f"{base}/studies/{uid}", headers=auth, timeout=5).json()["state"] == "done":
                break
            time.sleep(0.3)
        events = [r["event"] for r in audit_records(state)]
        assert events == ["analysis", "requeued", "analysis"]
        submitted = requests.post(f"{base}/studies/{uid}", headers=auth, timeout=30)
        assert submitted.status_code == 202 and submitted.json()["new"] is False
        assert requests.post(f"{base}/studies/1.2.3.999", headers=auth, timeout=30).status_code == 404
        verify = requests.get(f"{base}/audit/verify", headers=auth, timeout=5).json()
        assert verify["intact"] and verify["records"] == len(audit_records(state, alerts=True))
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert token not in stderr
    assert process.returncode == 0


@pytest.mark.req("SRS-SVC-008")
def test_api_without_a_token_is_refused(tmp_path: Path) -> None:
    result = serve(tmp_path / "state", "--watch", str(tmp_path), "--api", "127.0.0.1:1")
    assert result.returncode == 2 and "--api needs --token-file" in result.stderr
    (tmp_path / "short").write_text("abc\n")
    short = serve(tmp_path / "state", "--watch", str(tmp_path), "--api", "127.0.0.1:1", "--token-file",
                  str(tmp_path / "short"))
    assert short.returncode == 2 and "at least 16 characters" in short.stderr


@pytest.mark.req("SRS-SVC-006")
def test_pushed_study_is_analysed_and_sent_on(pacs: Orthanc, mass_phantom_dir: Path, tmp_path: Path) -> None:
    from pynetdicom import AE

    port = free_port()
    state = tmp_path / "state"
    process = subprocess.Popen([*CAD, "serve", "--state", str(state), "--scp", f"MAMMO_CAD:{port}",
                                "--send", f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}", "--quiet-seconds", "1",
                                "--poll-seconds", "0.5"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        paths = exam_files_of(mass_phantom_dir)[0]
        datasets = [pydicom.dcmread(p) for p in paths]
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            association = ae.associate("127.0.0.1", port, ae_title="MAMMO_CAD")
            if association.is_established:
                break
            time.sleep(0.3)
        assert association.is_established
        statuses = [association.send_c_store(ds).Status for ds in datasets]
        association.release()
        assert statuses == [0, 0, 0, 0]
        uid = study_uid_of(paths[0])
        while time.monotonic() < deadline and not pacs.instances(uid, SR_CLASS):
            time.sleep(0.5)
        (sr,) = pacs.instances(uid, SR_CLASS)
        assert sr.StudyInstanceUID == uid
        while time.monotonic() < deadline and jobs(state)[0]["state"] == "running":  # delivered, finishing
            time.sleep(0.2)
        (job,) = jobs(state)
        assert job["state"] == "done" and job["source"] == "scp"
        assert json.loads(job["outputs"])["delivered_to"] == "c-store"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


@pytest.mark.req("SRS-SVC-006")
def test_watched_folder_gets_results_beside_the_study(mass_phantom_dir: Path, tmp_path: Path) -> None:
    watch = tmp_path / "inbox"
    drop = watch / "exam-1"
    drop.mkdir(parents=True)
    for path in exam_files_of(mass_phantom_dir)[0]:
        (drop / path.name).write_bytes(path.read_bytes())
    state = tmp_path / "state"
    result = serve(state, "--watch", str(watch), "--once", "--quiet-seconds", "0.5")
    assert result.returncode == 0, result.stderr
    uid = study_uid_of(exam_files_of(mass_phantom_dir)[0][0])
    results = drop / "cad-results" / uid
    assert (results / "findings.json").is_file() and (results / "cad-sr.dcm").is_file()
    assert list((results / "overlays").glob("*.png"))
    again = serve(state, "--watch", str(watch), "--once", "--quiet-seconds", "0.5")
    assert again.returncode == 0 and len(jobs(state)) == 1, "results in the folder are not new inputs"


@pytest.mark.req("SRS-SVC-007")
def test_audit_verify_names_altered_and_removed_records(tmp_path: Path) -> None:
    from cad.service import audit, store

    state = tmp_path / "state"
    db = store.connect(state)
    for k in range(3):
        audit.append(db, {"event": "analysis", "study_uid": f"1.2.{k}"})
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET record = '{}' WHERE seq = 2")
    ok = subprocess.run([*CAD, "audit", "verify", "--state", str(state)], capture_output=True, text=True)
    assert ok.returncode == 0 and "3 records" in ok.stdout
    db.execute("DROP TRIGGER audit_append_only_update")  # an attacker with file access
    db.execute("UPDATE audit SET record = replace(record, '1.2.1', '1.2.9') WHERE seq = 2")
    altered = subprocess.run([*CAD, "audit", "verify", "--state", str(state)], capture_output=True, text=True)
    assert altered.returncode == 1 and "record 2: content does not match its hash" in altered.stderr
    db.execute("DROP TRIGGER audit_append_only_delete")
    db.execute("DELETE FROM audit WHERE seq = 1")
    removed = subprocess.run([*CAD, "audit", "verify", "--state", str(state)], capture_output=True, text=True)
    assert removed.returncode == 1 and "expected sequence number 1" in removed.stderr


def _wait_for(url: str, **kwargs: Any) -> requests.Response:
    deadline = time.monotonic() + 120
    while True:
        try:
            return requests.get(url, timeout=2, **kwargs)
        except requests.exceptions.SSLError:
            raise
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.req("SRS-SVC-010")
def test_api_serves_https_and_refuses_the_network_without_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    (tmp_path / "token").write_text("a-long-enough-api-token\n")
    (tmp_path / "watch").mkdir()
    refused = serve(tmp_path / "state", "--watch", str(tmp_path / "watch"), "--api", "0.0.0.0:8443",
                    "--token-file", str(tmp_path / "token"))
    assert refused.returncode == 2 and "needs HTTPS" in refused.stderr
    port = free_port()
    process = subprocess.Popen([*CAD, "serve", "--state", str(tmp_path / "state"), "--watch", str(tmp_path / "watch"),
                                "--api", f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token"),
                                "--tls-cert", str(cert), "--tls-key", str(key)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        answer = _wait_for(f"https://127.0.0.1:{port}/health", verify=str(cert))
        assert answer.json()["status"] == "ok"
        with pytest.raises(requests.RequestException):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


@pytest.mark.req("SRS-SVC-010")
def test_scp_rejects_senders_not_allowed(mass_phantom_dir: Path, tmp_path: Path) -> None:
    from pynetdicom import AE

    port = free_port()
    process = subprocess.Popen([*CAD, "serve", "--state", str(tmp_path / "state"), "--scp", f"MAMMO_CAD:{port}",
                                "--scp-allow", "MODALITY1,MODALITY2"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        ds = pydicom.dcmread(exam_files_of(mass_phantom_dir)[0][0])
        results = {}
        for title in ("INTRUDER", "MODALITY2"):
            ae = AE(ae_title=title)
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
            deadline = time.monotonic() + 120
            while True:
                association = ae.associate("127.0.0.1", port, ae_title="MAMMO_CAD")
                if association.is_established or association.is_rejected or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            results[title] = association.is_established
            if association.is_established:
                assert association.send_c_store(ds).Status == 0
                association.release()
        assert results == {"INTRUDER": False, "MODALITY2": True}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


@pytest.mark.req("SRS-SVC-010")
def test_pacs_that_requires_authentication(mass_phantom_dir: Path, tmp_path: Path) -> None:
    import base64

    pacs = Orthanc(tmp_path / "orthanc", users={"cad": "pacs-secret"})
    with pacs:
        auth = ("cad", "pacs-secret")
        for path in exam_files_of(mass_phantom_dir)[0]:
            requests.post(f"{pacs.url}/instances", data=path.read_bytes(), auth=auth, timeout=60).raise_for_status()
        without = serve(tmp_path / "state-a", "--dicomweb", pacs.dicomweb, "--once")
        assert without.returncode == 1 and "could not be reached" in without.stderr
        (tmp_path / "auth").write_text("Basic " + base64.b64encode(b"cad:pacs-secret").decode() + "\n")
        with_auth = serve(tmp_path / "state-b", "--dicomweb", pacs.dicomweb, "--once", "--dicomweb-auth-file",
                          str(tmp_path / "auth"))
        assert with_auth.returncode == 0, with_auth.stderr
        (job,) = jobs(tmp_path / "state-b")
        assert job["state"] == "done"
        assert "pacs-secret" not in with_auth.stderr and "cGFjcy1zZWNyZXQ" not in with_auth.stderr


@pytest.mark.req("SRS-SVC-001")
def test_every_study_in_the_pacs_is_found(pacs: Orthanc, tmp_path: Path) -> None:
    from cad.service import store
    from cad.service.queue import JobQueue
    from cad.service.sources import DicomWebPacs
    from cad_tools.phantom.generate import generate

    generate(tmp_path / "exams", exams=5, seed=91)
    pacs.upload(sorted((tmp_path / "exams").glob("exam*/*.dcm")))
    source = DicomWebPacs(pacs.dicomweb)
    queue = JobQueue(store.connect(tmp_path / "state"))
    assert source.poll(queue) == 5
    assert len({j.study_uid for j in queue.jobs()}) == 5
    assert source.poll(queue) == 0


@pytest.mark.req("SRS-SVC-012")
def test_alert_options_are_checked_before_the_service_starts(tmp_path: Path) -> None:
    bad_url = serve(tmp_path / "state", "--watch", str(tmp_path), "--alert-webhook", "ftp://gateway/alerts")
    assert bad_url.returncode == 2 and "--alert-webhook ftp://gateway/alerts: use an http:// or https:// URL" in bad_url.stderr
    bad_limit = serve(tmp_path / "state", "--watch", str(tmp_path), "--late-after", "0")
    assert bad_limit.returncode == 2 and "--late-after" in bad_limit.stderr


@pytest.mark.req("SRS-SVC-020")
def test_a_port_that_cannot_be_opened_stops_the_service_with_exit_6(mass_phantom_dir: Path, tmp_path: Path) -> None:
    """A site must not lose its dashboard, alerts, /ready and /metrics (or its SCP) to a port in
    use while the service runs on without them."""
    import socket

    token = tmp_path / "token"
    token.write_text("a-token-of-thirty-two-characters\n")
    watched = tmp_path / "inbox"
    shutil.copytree(mass_phantom_dir / "exam00000", watched / "exam")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for option, args in (("--api", ["--api", f"127.0.0.1:{port}", "--token-file", str(token)]),
                             ("--scp", ["--scp", f"MAMMO_CAD:{port}"])):
            state = tmp_path / f"state{option}"
            ran = serve(state, "--watch", str(watched), "--quiet-seconds", "0", *args, "--once", timeout=300)
            assert ran.returncode == 6, ran.stderr
            (line,) = [l for l in ran.stderr.splitlines() if l.startswith("error:")]
            assert line.startswith(f"error: {option} ") and f":{port}: cannot listen" in line
            assert "address already in use" in line and "Traceback" not in ran.stderr
            assert not jobs(state), "nothing was analysed"
    assert not (watched / "exam" / "cad-results").exists()
