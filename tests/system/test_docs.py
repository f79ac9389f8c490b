"""`make docs`: the submission set builds without warnings from the sources of truth (SRS-PRD-005)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from traceability.requirements import load_requirements

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.req("SRS-PRD-005")
@pytest.mark.slow
def test_document_set_builds_and_matches_its_sources(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs, ignore=shutil.ignore_patterns("generated", "_build"))
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" timestamp="2026-12-01T00:00:00" hostname="ci">'
        '<testcase classname="tests.integration.test_ingest" name="test_phantom_exam_round_trips" time="0.1">'
        '<properties><property name="req" value="SRS-ING-001" /></properties></testcase>'
        '<testcase classname="tests.integration.test_ingest" name="test_for_processing_refused" time="0.1">'
        '<properties><property name="req" value="SRS-ING-002" /></properties><failure message="boom" /></testcase>'
        "</testsuite></testsuites>")
    env = {**os.environ, "CAD_DOCS_ROOT": str(REPO), "CAD_DOCS_JUNIT": str(junit)}
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(docs),
                             str(tmp_path / "html")], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr and "ERROR" not in result.stderr
    generated = docs / "generated"
    srs = (generated / "srs.rst").read_text()
    assert srs.count("\n.. req:: ") + srs.startswith(".. req:: ") == len(load_requirements())
    ing1 = srs[srs.index(":id: SRS-ING-001"):].split(".. req::")[0]
    ing2 = srs[srs.index(":id: SRS-ING-002"):].split(".. req::")[0]
    assert ":status: verified" in ing1 and ":status: test_failed" in ing2
    hazards = yaml.safe_load((REPO / "risk" / "hazards.yaml").read_text())["hazards"]
    assert (generated / "risk.rst").read_text().count(".. hazard:: ") == len(hazards)
    assert (generated / "verification.rst").read_text().count(".. test:: ") == 2
    manifest = json.loads((REPO / "models" / "phantom-retinanet-r18" / "manifest.json").read_text())
    notes = (tmp_path / "html" / "generated" / "release-notes.html").read_text()
    assert manifest["weights"]["sha256"] in notes and "ANOM-001" in notes
    for page in ("sdp", "instructions-for-use", "generated/srs", "generated/items", "generated/risk",
                 "generated/verification", "generated/traceability", "generated/performance",
                 "generated/reader-study-example", "generated/release-notes"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
