"""`cad batch --dicomweb` against a real Orthanc (Debian orthanc + orthanc-dicomweb) that demands
authentication: studies listed with QIDO-RS, fetched by the workers with WADO-RS, outputs equal
to `cad detect`'s on the same files (SRS-BAT-003)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cad_tools.orthanc import Orthanc, free_port, orthanc_available
from cad_tools.phantom.generate import generate

pytestmark = pytest.mark.skipif(orthanc_available() is not None,
                                reason=f"Orthanc {orthanc_available()}; `make test` installs it")

CAD = [sys.executable, "-m", "cad.cli"]
REPRODUCIBLE = {**os.environ, "SOURCE_DATE_EPOCH": "1780000000"}


def _batch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAD, "batch", *args], capture_output=True, text=True, timeout=600, env=REPRODUCIBLE)


@pytest.mark.slow
@pytest.mark.req("SRS-BAT-003")
def test_an_archive_on_a_pacs_is_analysed_as_its_files_are(tmp_path: Path) -> None:
    generate(tmp_path / "archive", exams=3, seed=1820)
    files = sorted((tmp_path / "archive").glob("exam*/*.dcm"))
    with Orthanc(tmp_path / "orthanc", users={"cad": "pacs-secret"}) as pacs:
        import requests

        for path in files:
            requests.post(f"{pacs.url}/instances", data=path.read_bytes(), auth=("cad", "pacs-secret"),
                          timeout=60).raise_for_status()
        out = tmp_path / "batch"
        refused = _batch("--dicomweb", pacs.dicomweb, "--out", str(out))
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr and "Traceback" not in refused.stderr
        auth = tmp_path / "auth"
        auth.write_text("Basic " + base64.b64encode(b"cad:pacs-secret").decode() + "\n")
        ran = _batch("--dicomweb", pacs.dicomweb, "--dicomweb-auth-file", str(auth), "--out", str(out),
                     "--workers", "2")
        assert ran.returncode == 0, ran.stderr
        assert "pacs-secret" not in ran.stderr + ran.stdout and "cGFjcy1zZWNyZXQ" not in ran.stderr + ran.stdout
        report = json.loads((out / "batch-report.json").read_text())
        assert report["studies_discovered"] == 3 and report["ledger"] == {"pending": 0, "done": 3, "failed": 0}
        assert report["stage_seconds_per_study"]["fetch"] > 0
        again = _batch("--dicomweb", pacs.dicomweb, "--dicomweb-auth-file", str(auth), "--out", str(out))
        assert again.returncode == 0 and json.loads((out / "batch-report.json").read_text())["skipped_already_done"] == 3

    detected = tmp_path / "detect"
    assert subprocess.run([*CAD, "detect", str(tmp_path / "archive"), "--out", str(detected), "--no-overlays"],
                          capture_output=True, timeout=600, env=REPRODUCIBLE).returncode == 0
    studies = sorted(p.name for p in detected.glob("2.25.*"))
    assert sorted(p.name for p in out.glob("2.25.*")) == studies and len(studies) == 3
    assert not any((out / ".partial").rglob("*.dcm")), "fetched instances are deleted after analysis"
    for uid in studies:
        for written in (detected / uid).glob("*.dcm"):
            assert (out / uid / written.name).read_bytes() == written.read_bytes(), written.name
        ours, theirs = (json.loads((root / uid / "findings.json").read_text()) for root in (out, detected))
        for image in ours["images"] + theirs["images"]:  # fetched copies are named by SOP Instance UID
            image.pop("file")
        assert ours == theirs


@pytest.mark.req("SRS-BAT-003")
def test_a_pacs_that_cannot_be_reached_stops_the_run_with_one_line(tmp_path: Path) -> None:
    ran = _batch("--dicomweb", f"http://127.0.0.1:{free_port()}/dicom-web", "--out", str(tmp_path / "out"))
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
    (line,) = [x for x in ran.stderr.splitlines() if x.startswith("error:")]
    assert "DICOMweb study search failed" in line
    usage = _batch("--out", str(tmp_path / "out"), "--since", "20260101")
    assert usage.returncode == 2 and "error:" in usage.stderr
