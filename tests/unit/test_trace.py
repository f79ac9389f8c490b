"""`cad trace`: matrices from the sources of truth and every kind of gap (SRS-PRD-004)."""

from __future__ import annotations

import csv
import html
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jinja2
import pytest

from traceability.matrix import ANOMALY, ENVIRONMENT, UNVERIFIED, VERIFIED, build_trace
from traceability.report import write_trace
from traceability.results import read_junit
from verification.html import render

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def junit(path: Path, cases: list[tuple[str, str, list[str]]]) -> Path:
    """A pytest-style JUnit file: (name, outcome, requirement IDs) per test of tests/unit/test_x.py."""
    body = []
    for name, outcome, reqs in cases:
        props = "".join(f'<property name="req" value="{r}" />' for r in reqs)
        inner = f"<properties>{props}</properties>" if props else ""
        if outcome == "failed":
            inner += '<failure message="assert 1 == 2" />'
        elif outcome == "skipped":
            inner += '<skipped type="pytest.skip" message="needs a GPU" />'
        elif outcome == "xfailed":
            inner += '<skipped type="pytest.xfail" message="known" />'
        body.append(f'<testcase classname="tests.unit.test_x" name="{name}" time="0.1">{inner}</testcase>')
    path.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" timestamp="2026-12-01T00:00:00" '
                    f'hostname="ci">{"".join(body)}</testsuite></testsuites>')
    return path


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A complete, consistent little repository: every requirement verified, every control too."""
    base = tmp_path / "repo"
    write(base / "requirements" / "a.yaml", """
        requirements:
          - {id: SRS-ABC-001, title: One, category: functional, text: t, rationale: r, acceptance: a}
          - {id: SRS-ABC-002, title: Two, category: performance, text: t, rationale: r, acceptance: a,
             verification: {method: analysis, evidence: evidence.json,
                            criteria: [{path: [m, sens], op: ">=", value: 0.9, label: sensitivity}]}}
          - {id: SRS-ABC-003, title: Three, category: functional, text: t, rationale: r, acceptance: a, needs: [gpu]}
        """)
    (base / "evidence.json").write_text('{"m": {"sens": 0.95}}')
    write(base / "risk" / "policy.yaml", """
        severity: [{level: 1, name: low}, {level: 2, name: high}]
        probability: [{level: 1, name: rare}, {level: 2, name: often}]
        matrix: [[A, A], [A, U]]
        benefit: b
        """)
    write(base / "risk" / "controls.yaml", """
        controls:
          - {id: RC-001, title: Control, type: design, description: d, requirements: [SRS-ABC-001]}
        """)
    write(base / "risk" / "hazards.yaml", """
        hazards:
          - {id: HAZ-001, title: Hazard, hazard: h, sequence: s, hazardous_situation: hs, harm: x,
             severity: 2, probability_before: 2, controls: [RC-001], probability_after: 1, residual: ok}
        """)
    write(base / "risk" / "safety-class.yaml", "software_system: x\nclass: B\nrationale: r\nitems: all\n")
    write(base / "docs" / "software-items.yaml", """
        system: x
        items:
          - {id: SI-A, name: A, device: true, modules: [cad/*.py], interface: i, layers: [cad.core],
             requirements: [SRS-ABC-001, SRS-ABC-002, SRS-ABC-003]}
        """)
    write(base / "cad" / "core.py", "x = 1\n")
    write(base / "pyproject.toml", """
        [[tool.importlinter.contracts]]
        id = "device-layers"
        type = "layers"
        layers = ["cad.core | cad.other"]

        [[tool.importlinter.contracts]]
        id = "device-independent-of-tooling"
        type = "forbidden"
        source_modules = ["cad.core"]
        forbidden_modules = ["tools"]
        """)
    shutil.copy(REPO / "locked-dependencies.txt", base / "locked-dependencies.txt")
    shutil.copy(REPO / "docs" / "soup.yaml", base / "docs" / "soup.yaml")
    return base


@pytest.mark.req("SRS-PRD-004")
def test_complete_sources_have_no_gaps_and_the_matrices_name_everything(root: Path, tmp_path: Path) -> None:
    run = read_junit(junit(tmp_path / "j.xml", [("test_one", "passed", ["SRS-ABC-001"]),
                                                ("test_gpu", "skipped", ["SRS-ABC-003"])]))
    trace = build_trace(run, environments=set(), root=root)
    assert trace.gaps == []
    verdicts = {r.requirement.id: r.verdict for r in trace.requirements}
    assert verdicts == {"SRS-ABC-001": VERIFIED, "SRS-ABC-002": VERIFIED, "SRS-ABC-003": ENVIRONMENT}
    assert any("SRS-ABC-003" in n and "gpu" in n for n in trace.notes)
    assert trace.requirement("SRS-ABC-001").safety_relevant and trace.requirement("SRS-ABC-001").hazards == ("HAZ-001",)
    paths = write_trace(trace, tmp_path / "out", "cad trace")
    rows = list(csv.DictReader(paths["requirements"].open()))
    one = next(r for r in rows if r["requirement"] == "SRS-ABC-001")
    assert one["software_items"] == "SI-A" and "tests/unit/test_x.py::test_one [passed]" in one["tests"]
    risks = list(csv.DictReader(paths["risks"].open()))
    assert risks[0]["hazard"] == "HAZ-001" and risks[0]["control"] == "RC-001" and risks[0]["risk_after"] == "A"
    assert "SRS-ABC-002" in paths["html"].read_text() and paths["gaps"].read_text() == ""
    assert build_trace(run, environments=set(), strict=True, root=root).gaps  # the GPU requirement, strictly


@pytest.mark.req("SRS-PRD-004")
def test_html_matrices_show_titles_and_command_as_text_never_as_markup(root: Path, tmp_path: Path) -> None:
    requirements = root / "requirements" / "a.yaml"
    requirements.write_text(requirements.read_text().replace("title: Two,", 'title: "Two <script>alert(1)</script> R&amp;D",'))
    run = read_junit(junit(tmp_path / "j.xml", [("test_one", "passed", ["SRS-ABC-001"])]))
    paths = write_trace(build_trace(run, environments=set(), root=root), tmp_path / "out", "cad trace --out '<b>'")
    page = paths["html"].read_text()
    assert "<script>" not in page and "<b>" not in page
    shown = html.unescape(page)
    assert "Two <script>alert(1)</script> R&amp;D" in shown and "<code>cad trace --out '<b>'</code>" in shown
    with pytest.raises(jinja2.UndefinedError):  # a value the page needs and was not given is an error, not a blank
        render("trace_index.html", title="Traceability matrices")


@pytest.mark.req("SRS-PRD-004")
@pytest.mark.req("SRS-PRD-007")
def test_every_kind_of_gap_is_reported(root: Path, tmp_path: Path) -> None:
    (root / "evidence.json").write_text('{"m": {"sens": 0.5}}')
    write(root / "cad" / "orphan" / "lost.py", "y = 2\n")
    with (root / "risk" / "controls.yaml").open("a") as handle:
        handle.write("  - {id: RC-002, title: Unused, type: information, description: d, requirements: []}\n")
    write(root / "cad" / "extra" / "part.py", "z = 3\n")
    write(root / "cad" / "util" / "side.py", "w = 4\n")
    with (root / "docs" / "software-items.yaml").open("a") as handle:
        handle.write("  - {id: SI-B, name: B, device: false, modules: [nowhere/*.py], interface: i, requirements: []}\n")
        handle.write("  - {id: SI-C, name: C, device: true, modules: [cad/extra/*.py], interface: i, layers: [cad.other],\n"
                     "     requirements: [SRS-ABC-001]}\n")
        handle.write("  - {id: SI-D, name: D, device: false, modules: [cad/util/*.py], interface: i,\n"
                     "     requirements: [SRS-ABC-001]}\n")
    (root / "risk" / "hazards.yaml").write_text((root / "risk" / "hazards.yaml").read_text().replace(
        "probability_after: 1", "probability_after: 2"))
    run = read_junit(junit(tmp_path / "j.xml", [("test_one", "failed", ["SRS-ABC-001"]),
                                                ("test_bad", "passed", ["SRS-NOPE-001"]),
                                                ("test_none", "passed", [])]))
    gaps = "\n".join(build_trace(run, root=root).gaps)
    for expected in ("SRS-ABC-001 (One): test failed: tests/unit/test_x.py::test_one",
                     "SRS-ABC-002 (Two): not met by analysis: sensitivity 0.5 (needs >= 0.9)",
                     "test tests/unit/test_x.py::test_bad: unknown requirement SRS-NOPE-001",
                     "test tests/unit/test_x.py::test_none: names no requirement",
                     "cad/orphan/lost.py: belongs to 0 software items",
                     "SI-B: software item without requirements",
                     "RC-002 (Unused): risk control used by no hazard",
                     "RC-002 (Unused): implemented by no requirement",
                     "RC-001 (Control): no verified requirement implements it",
                     "HAZ-001: residual risk (S2, P2) is unacceptable",
                     "SI-C: layer cad.other is not covered by contract device-independent-of-tooling",
                     "SI-C: cad/extra/part.py lies outside its layers (cad.other)",
                     "SI-D: tooling module cad/util/side.py is not forbidden to the device"):
        assert expected in gaps, expected


@pytest.mark.req("SRS-PRD-004")
def test_known_anomaly_is_reported_not_counted_and_must_be_closed_when_met(root: Path, tmp_path: Path) -> None:
    (root / "evidence.json").write_text('{"m": {"sens": 0.5}}')
    write(root / "risk" / "anomalies.yaml", """
        anomalies:
          - {id: ANOM-001, title: Low sensitivity, requirements: [SRS-ABC-002], hazards: [HAZ-001],
             description: d, evaluation: e, status: open}
        """)
    run = read_junit(junit(tmp_path / "j.xml", [("test_one", "passed", ["SRS-ABC-001"])]))
    trace = build_trace(run, root=root)
    assert trace.requirement("SRS-ABC-002").verdict == ANOMALY
    assert not [g for g in trace.gaps if "SRS-ABC-002" in g] and any("ANOM-001" in n for n in trace.notes)
    (root / "evidence.json").write_text('{"m": {"sens": 0.99}}')
    assert any("ANOM-001 is still open: close it" in g for g in build_trace(run, root=root).gaps)
    assert build_trace(None, root=root).requirement("SRS-ABC-001").verdict == UNVERIFIED


@pytest.mark.req("SRS-PRD-004")
def test_cad_trace_exits_1_listing_gaps_for_this_repository_without_results(tmp_path: Path) -> None:
    empty = junit(tmp_path / "empty.xml", [])
    result = subprocess.run([sys.executable, "-m", "cad.cli", "trace", "--junit", str(empty), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "gap: SRS-ING-001 (Read MG For Presentation images): no passing test" in result.stderr
    assert (tmp_path / "out" / "index.html").is_file() and (tmp_path / "out" / "requirements.csv").is_file()
    missing = subprocess.run([sys.executable, "-m", "cad.cli", "trace", "--junit", str(tmp_path / "nope.xml"),
                              "--out", str(tmp_path / "o2")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    (tmp_path / "broken.xml").write_text("<testsuites><testsuite>")
    broken = subprocess.run([sys.executable, "-m", "cad.cli", "trace", "--junit", str(tmp_path / "broken.xml"),
                             "--out", str(tmp_path / "o3")], capture_output=True, text=True, timeout=300)
    assert broken.returncode == 2 and "not a readable JUnit XML file" in broken.stderr
    assert "Traceback" not in broken.stderr
