"""`cad batch` on a phantom archive with a corrupt and a non-MG file: the same output bytes as
`cad detect` (both with one SOURCE_DATE_EPOCH), nothing redone on a second run, and a driver
killed mid-run completes each study once when started again (SRS-BAT-001, SRS-DCM-007)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from cad_tools.phantom.generate import generate

CAD = [sys.executable, "-m", "cad.cli"]
#: one creation instant for every run compared byte for byte (SRS-DCM-007)
REPRODUCIBLE = {**os.environ, "SOURCE_DATE_EPOCH": "1780000000"}


def _archive(root: Path, exams: int, seed: int) -> Path:
    archive = root / "archive"
    generate(archive, exams=exams, seed=seed)
    (archive / "truth.json").unlink()
    return archive


def _study_folders(out: Path) -> dict[str, Path]:
    return {p.name: p for p in out.iterdir() if p.is_dir() and p.name.startswith("2.25.")}


@pytest.mark.slow
@pytest.mark.req("SRS-BAT-001", "SRS-DCM-007")
def test_batch_writes_what_detect_writes_once_and_records_what_it_cannot_use(tmp_path: Path) -> None:
    archive = _archive(tmp_path, exams=2, seed=1818)
    first_exam = sorted(p for p in archive.iterdir() if p.is_dir())[0]
    corrupt = sorted(first_exam.glob("*.dcm"))[0]
    data = corrupt.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    other = Dataset()  # a non-MG instance in the archive
    other.file_meta = pydicom.dataset.FileMetaDataset()
    other.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    other.SOPClassUID, other.SOPInstanceUID = pydicom.uid.CTImageStorage, "2.25.1"
    other.StudyInstanceUID, other.Modality = "2.25.2", "CT"
    other.save_as(archive / "ct.dcm", enforce_file_format=True)
    (archive / "notes.txt").write_text("a sidecar: not read")
    (archive / "broken.dcm").write_text("not DICOM")

    out = tmp_path / "batch"
    ran = subprocess.run([*CAD, "batch", str(archive), "--out", str(out)], capture_output=True, text=True, timeout=600,
                         env=REPRODUCIBLE)
    assert ran.returncode == 5, ran.stderr  # the corrupt image and the unreadable file: incomplete
    report = json.loads((out / "batch-report.json").read_text())
    assert report["studies_discovered"] == 2 and report["studies_done_this_run"] == 2
    assert report["studies_incomplete_this_run"] == 1 and report["incomplete_in_ledger"] == 1
    assert {Path(f["file"]).name: f["reason"] for f in report["files_not_mammograms"]} == {
        "ct.dcm": "not a mammogram: Modality is 'CT' (expected 'MG')"}
    assert report["files_not_analysed"] == [{"file": str(archive / "broken.dcm"),
                                             "reason": "not a DICOM file (no DICM preamble or header)"}]
    assert f"not analysed: {corrupt}: " in ran.stderr, "the image not analysed, named by its path"
    assert report["stage_seconds_per_study"] and report["studies_per_hour"] > 0

    detected = tmp_path / "detect"
    subprocess.run([*CAD, "detect", str(archive), "--out", str(detected), "--no-overlays"], capture_output=True,
                   text=True, timeout=600, env=REPRODUCIBLE)
    batch_studies, detect_studies = _study_folders(out), _study_folders(detected)
    # the CT instance belongs to no exam in either (one rule, SRS-OUT-006): no study, no SR
    assert set(batch_studies) == set(detect_studies) and len(batch_studies) == 2 and "2.25.2" not in detect_studies
    for uid, folder in batch_studies.items():
        theirs = detect_studies[uid]
        assert {p.name for p in folder.iterdir()} == {p.name for p in theirs.iterdir()} | {"batch-record.json"}
        assert {"findings.json", "cad-sr.dcm"} <= {p.name for p in theirs.iterdir()}
        assert any(p.name.startswith("cad-pr") for p in theirs.iterdir())
        for written in theirs.iterdir():
            assert (folder / written.name).read_bytes() == written.read_bytes(), written.name
    findings = json.loads((batch_studies[next(iter(batch_studies))] / "findings.json").read_text())
    statuses = sorted(i["status"] for uid in batch_studies
                      for i in json.loads((batch_studies[uid] / "findings.json").read_text())["images"])
    assert statuses.count("analyzed") == 7 and len(statuses) == 8, "the corrupt image is recorded, not lost"
    assert findings["algorithm"]["model_sha256"]

    # a second run does nothing and rewrites nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".dcm")
              and p.parent != out}
    again = subprocess.run([*CAD, "batch", str(archive), "--out", str(out)], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 5, again.stderr  # the incomplete study done earlier is still incomplete
    second = json.loads((out / "batch-report.json").read_text())
    assert second["skipped_already_done"] == 2 and second["studies_done_this_run"] == 0
    assert before == {p: p.stat().st_mtime_ns for p in before}

    # a manifest CSV of the same files gives the same studies
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path\n" + "".join(f"{p.relative_to(tmp_path)}\n" for p in sorted(archive.rglob("*.dcm"))))
    listed = subprocess.run([*CAD, "batch", str(manifest), "--out", str(out)], capture_output=True, text=True,
                            timeout=600)
    assert listed.returncode == 5 and json.loads((out / "batch-report.json").read_text())["skipped_already_done"] == 2


@pytest.mark.slow
@pytest.mark.req("SRS-BAT-001")
def test_a_killed_run_started_again_completes_each_study_once(tmp_path: Path) -> None:
    archive = _archive(tmp_path, exams=5, seed=1819)
    out = tmp_path / "batch"
    command = [*CAD, "batch", str(archive), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out.exists() and _study_folders(out)):
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its workers, mid-run
    process.wait(timeout=30)
    survived = {uid: json.loads((folder / "batch-record.json").read_text())["worker_pid"]
                for uid, folder in _study_folders(out).items()}
    assert 1 <= len(survived) < 5, "killed mid-run"

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    report = json.loads((out / "batch-report.json").read_text())
    assert report["ledger"] == {"pending": 0, "done": 5, "failed": 0}
    assert report["studies_done_this_run"] + report["skipped_already_done"] + report["recovered_from_an_interrupted_run"] == 5
    studies = _study_folders(out)
    assert len(studies) == 5 and not any((out / ".partial").glob("*/*"))
    for uid, pid in survived.items():  # what was done before the kill was not done again
        assert json.loads((studies[uid] / "batch-record.json").read_text())["worker_pid"] == pid
