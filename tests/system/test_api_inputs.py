"""What schemathesis found in the API (`make fuzz`), kept fixed, against a real `cad serve`
(SRS-SEC-004): out-of-range numbers are refused as invalid requests rather than failing in
SQLite, an unreachable PACS is a 502 rather than an internal error, an outcomes body with a
carriage return inside a row is read rather than failing in the csv module, a submitted
study UID that is not a UID is refused before any PACS query, and the OpenAPI
document states every answer the API gives and the outcomes body."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from cad_tools.orthanc import free_port

CAD = [sys.executable, "-m", "cad.cli"]
TOKEN = "a-test-token-of-enough-length"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def service(tmp_path: Path, until: Callable[..., Any]) -> Iterator[str]:
    """`cad serve` with the API on loopback and a DICOMweb PACS that cannot be reached."""
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    process = subprocess.Popen([*CAD, "serve", "--state", str(tmp_path / "state"), "--dicomweb",
                                f"http://127.0.0.1:{free_port()}/dicom-web", "--poll-seconds", "60", "--api",
                                f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        until(lambda: requests.get(f"{base}/health", timeout=2).ok)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.mark.req("SRS-SEC-004")
def test_fuzzer_findings_stay_fixed(service: str) -> None:
    for path in ("/alerts?limit=-40578307503226648440864768", "/studies?limit=0", "/studies?limit=10001",
                 "/performance?window_days=-1"):
        assert requests.get(service + path, headers=AUTH, timeout=30).status_code == 422, path
    huge = requests.post(f"{service}/alerts/145576118089187627892736/acknowledge", json={"by": "QA", "note": "x"},
                         headers=AUTH, timeout=30)
    assert huge.status_code == 422
    garbled = requests.post(f"{service}/alerts/7/acknowledge", data=b"\x8f8\t", timeout=30,
                            headers={**AUTH, "Content-Type": "application/json"})
    assert garbled.status_code in (400, 422)
    assert requests.get(f"{service}/alerts?limit=5", headers=AUTH, timeout=30).status_code == 200
    # a carriage return inside a row (the outcomes file's own parser saw only \n-normalised text)
    crlf = requests.post(f"{service}/outcomes", headers={**AUTH, "Content-Type": "text/csv"}, timeout=30,
                         data=b"StudyInstanceUID,assessment,recall\r\n1.2.826.0.1.3680043.2.1125.9.1,4\r,yes\n")
    assert crlf.status_code == 200 and crlf.json()["imported"] == 0 and len(crlf.json()["refused"]) == 2
    oversized_field = requests.post(f"{service}/outcomes", headers={**AUTH, "Content-Type": "text/csv"}, timeout=30,
                                    data=b"StudyInstanceUID,assessment,recall\n" + b"9" * 200_000 + b"\n")
    assert oversized_field.status_code == 400 and "not a readable CSV" in oversized_field.json()["detail"]
    not_a_uid = requests.post(f"{service}/studies/Ax%21u%C3%B5%C3%89%C2%BCO", headers=AUTH, timeout=30)
    assert not_a_uid.status_code == 400 and "UID" in not_a_uid.json()["detail"]
    unreachable = requests.post(f"{service}/studies/1.2.3", headers=AUTH, timeout=120)
    assert unreachable.status_code == 502 and "DICOMweb" in unreachable.json()["detail"]

    schema = requests.get(f"{service}/openapi.json", timeout=30).json()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if path not in ("/health", "/ready") and not path.startswith("/ui"):
                assert "401" in operation["responses"], (method, path)
    assert {"400", "502"} <= set(schema["paths"]["/studies/{study_uid}"]["post"]["responses"])
    assert {"200", "503"} <= set(schema["paths"]["/ready"]["get"]["responses"])
    assert "text/plain" in "".join(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"])
    assert "text/csv" in schema["paths"]["/outcomes"]["post"]["requestBody"]["content"]
