"""The service's HTTP API fuzzed by schemathesis against its own OpenAPI document:
`python -m cad_tools.fuzz.api --out DIR [--examples N] [--schemathesis PATH]`.

A real `cad serve` with the API on loopback and a token, a watched folder holding one phantom
study, and a DICOMweb PACS that cannot be reached: the PACS check fails and raises a not-ready
alert, a submission reaches the PACS client, and the study is analysed but ends failed (its
outputs cannot be stored to the PACS) with a study-failed alert. schemathesis (a black-box HTTP tool,
kept in its own virtual environment by `make fuzz` because its jsonschema-rs pin conflicts with
sphinx-needs) runs twice: once with every parameter generated, once with the path parameters set
to the study and alert that exist, so that the operations on one study or alert reach their
logic rather than a 404. Each pass checks that no answer is a server error (5xx) and every answer
conforms to the schema; the JUnit reports, logs and a summary go to DIR/api/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from cad_tools.orthanc import free_port

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
#: answers of 5xx that the API documents for a PACS that cannot be reached (here on purpose): a
#: 502 for a submission and a 503 from the readiness probe; any other 5xx is a failure
DOCUMENTED_SERVER_ANSWERS = (("POST /studies/{study_uid}", 502), ("GET /ready", 503))


def _seed_service(base: str, inbox: Path, headers: dict[str, str]) -> dict[str, Any]:
    """Put one phantom study in the watched folder and wait until its job has ended and an alert
    is open; the path parameters that name them."""
    from cad_tools.phantom.generate import exam_files_of, generate

    generate(inbox.parent / "phantom", exams=1, seed=1919)
    for number, path in enumerate(exam_files_of(inbox.parent / "phantom")[0]):
        shutil.copy(path, inbox / f"image{number}.dcm")
    parameters: dict[str, Any] = {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(parameters) < 2:
        jobs = requests.get(f"{base}/studies", headers=headers, timeout=30).json()["jobs"]
        finished = [j for j in jobs if j["state"] in ("done", "failed")]
        if finished:
            parameters["path.study_uid"] = finished[0]["study_instance_uid"]
        found = requests.get(f"{base}/alerts", headers=headers, timeout=30).json()["alerts"]
        if found:
            parameters["path.alert_id"] = found[0]["id"]
        time.sleep(1)
    return parameters


def _schemathesis(schemathesis: str, base: str, token: str, examples: int, folder: Path, name: str,
                  parameters: dict[str, Any] | None) -> dict[str, Any]:
    config = folder / f"{name}.toml"
    lines = [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in (parameters or {}).items()]
    text = "[parameters]\n" + "\n".join(lines) + "\n" if lines else ""
    for operation, status in DOCUMENTED_SERVER_ANSWERS:
        text += (f"\n[[operations]]\ninclude-name = {json.dumps(operation)}\n"
                 f'checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "{status}"]\n')
    config.write_text(text)
    command = [schemathesis, "--config-file", str(config), "run", f"{base}/openapi.json",
               "-H", f"Authorization: Bearer {token}", "--checks", CHECKS,
               "--max-examples", str(examples), "--request-timeout", "30", "--report", "junit",
               "--report-junit-path", str(folder / f"{name}-junit.xml"), "--seed", "19"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
    (folder / f"{name}.log").write_text(done.stdout[-1_000_000:] + done.stderr[-200_000:])
    junit = (folder / f"{name}-junit.xml").read_text() if (folder / f"{name}-junit.xml").is_file() else ""
    generated = re.findall(r"(\d+) generated, (\d+) passed", done.stdout)
    return {"pass": name, "exit_code": done.returncode, "wall_s": round(time.perf_counter() - began, 1),
            "parameters": parameters or {}, "operations_tested": int((re.findall(r"Tested: (\d+)", done.stdout)
                                                                     or ["0"])[-1]),
            "cases_generated": int(generated[-1][0]) if generated else None,
            "failures": junit.count("<failure"), "errors": junit.count("<error"),
            "warnings": [line.strip() for line in done.stdout.splitlines() if "\u26a0" in line]}


def run(out: Path, examples: int, schemathesis: str) -> dict[str, Any]:
    # absolute paths: schemathesis runs in the report folder (its crash cache lands there)
    folder = (out / "api").resolve()
    found = shutil.which(schemathesis)
    if found is None:
        raise SystemExit(f"error: schemathesis not found at {schemathesis} (make fuzz installs it in .venv-fuzz)")
    schemathesis = os.path.abspath(found)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        token = secrets.token_urlsafe(24)
        headers = {"Authorization": f"Bearer {token}"}
        (work / "token").write_text(token + "\n")
        (work / "inbox").mkdir()
        port = free_port()
        service = subprocess.Popen(
            [sys.executable, "-m", "cad.cli", "serve", "--state", str(work / "state"), "--watch", str(work / "inbox"),
             "--dicomweb", f"http://127.0.0.1:{free_port()}/dicom-web", "--poll-seconds", "1",
             "--api", f"127.0.0.1:{port}", "--token-file", str(work / "token")],
            stdout=subprocess.DEVNULL, stderr=(folder / "serve.log").open("w"))
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if requests.get(f"{base}/health", timeout=2).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.5)
            parameters = _seed_service(base, work / "inbox", headers)
            passes = [_schemathesis(schemathesis, base, token, examples, folder, "generated", None),
                      _schemathesis(schemathesis, base, token, examples, folder, "existing", parameters)]
        finally:
            service.terminate()
            service.wait(timeout=60)
    result = {"target": "api", "exit_code": max(p["exit_code"] for p in passes),
              "wall_s": round(sum(p["wall_s"] for p in passes), 1), "max_examples_per_operation": examples,
              "cases_generated": sum(p["cases_generated"] or 0 for p in passes),
              "failures": sum(p["failures"] + p["errors"] for p in passes), "passes": passes}
    (folder / "api-report.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/fuzz"))
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--schemathesis", default=".venv-fuzz/bin/schemathesis")
    args = parser.parse_args(argv)
    result = run(args.out, args.examples, args.schemathesis)
    print(json.dumps(result, indent=2))
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
