"""The service's HTTP API fuzzed by schemathesis against its own OpenAPI document:
`python -m cad.tools.fuzz.api --out DIR [--examples N] [--schemathesis PATH]`.

A real `cad serve --watch` with the API on loopback and a token; schemathesis (a black-box HTTP
tool, kept in its own virtual environment by `make fuzz` because its jsonschema-rs pin conflicts
with sphinx-needs) generates requests for every operation, authenticated and not, and checks
that none answers a server error (5xx) and every answer conforms to the schema. The JUnit and
JSON reports go to DIR/api/.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from cad.tools.orthanc import free_port

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def run(out: Path, examples: int, schemathesis: str) -> dict[str, Any]:
    folder = out / "api"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        token = secrets.token_urlsafe(24)
        (work / "token").write_text(token + "\n")
        (work / "inbox").mkdir()
        port = free_port()
        service = subprocess.Popen(
            [sys.executable, "-m", "cad.cli", "serve", "--state", str(work / "state"), "--watch", str(work / "inbox"),
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
            began = time.perf_counter()
            done = subprocess.run(
                [schemathesis, "run", f"{base}/openapi.json", "-H", f"Authorization: Bearer {token}",
                 "--checks", CHECKS, "--max-examples", str(examples), "--request-timeout", "30",
                 "--report", "junit", "--report-junit-path", str(folder / "junit.xml"), "--seed", "19"],
                capture_output=True, text=True)
            wall = time.perf_counter() - began
        finally:
            service.terminate()
            service.wait(timeout=60)
    (folder / "schemathesis.log").write_text(done.stdout[-1_000_000:] + done.stderr[-200_000:])
    junit = (folder / "junit.xml").read_text() if (folder / "junit.xml").is_file() else ""
    result = {"target": "api", "exit_code": done.returncode, "wall_s": round(wall, 1),
              "operations": junit.count("<testcase"), "failures": junit.count("<failure"),
              "errors": junit.count("<error"), "max_examples_per_operation": examples,
              "summary": [line for line in done.stdout.splitlines() if "passed" in line or "failed" in line][-3:]}
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
