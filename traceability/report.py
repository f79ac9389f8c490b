"""`cad trace --out DIR`: the matrices as CSV and one self-contained HTML page, plus the gaps.

Files: ``requirements.csv`` (requirement -> items -> tests -> result), ``risks.csv`` (hazard
-> control -> requirement -> tests -> result), ``tests.csv``, ``soup.csv``, ``gaps.txt``,
``trace.json`` and ``index.html`` (rendered from ``verification/templates/trace_index.html``).
"""

from __future__ import annotations

import csv
import json
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cad
from traceability.matrix import Trace
from traceability.requirements import REPO_ROOT
from verification.html import render


def git_revision(root: Path = REPO_ROOT) -> str:
    """The commit the sources are at (``-dirty`` with uncommitted changes), or ``unknown``."""
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root,
                                   capture_output=True, text=True, check=True, timeout=20)
        return described.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


#: Debian packages the verification runs (validators, the test PACS, the graph renderer)
TEST_TOOLS = ("dicom3tools", "dcmtk", "libpixelmed-java", "orthanc", "orthanc-dicomweb", "graphviz")


def tool_versions() -> dict[str, str]:
    """Installed versions of the external test tools (absent ones are left out)."""
    try:
        listed = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version} ${db:Status-Abbrev}\n", *TEST_TOOLS],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return {}
    versions = {}
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2].startswith("ii"):
            versions[parts[0]] = parts[1]
    return versions


def _tests_cell(tests: tuple[tuple[str, str], ...]) -> str:
    return "; ".join(f"{node} [{outcome}]" for node, outcome in tests)


def requirement_rows(trace: Trace) -> list[dict[str, Any]]:
    rows = []
    for r in trace.requirements:
        rows.append({
            "requirement": r.requirement.id, "title": r.requirement.title, "category": r.requirement.category,
            "safety_relevant": "yes" if r.safety_relevant else "no", "risk_controls": " ".join(r.controls),
            "hazards": " ".join(r.hazards), "software_items": " ".join(r.items), "tests": _tests_cell(r.tests),
            "passed": sum(o == "passed" for _, o in r.tests), "analysis": "; ".join(
                f"{c.label}: {c.measured} {c.op} {c.target} {'holds' if c.holds else 'FAILS'}" for c in r.analysis),
            "anomalies": " ".join(r.anomalies), "verdict": r.verdict,
        })
    return rows


def risk_rows(trace: Trace) -> list[dict[str, Any]]:
    rows = []
    policy = trace.risk.policy
    for h in trace.risk.hazards:
        for cid in h.controls or ("",):
            control = trace.risk.control(cid)
            for rid in (control.requirements if control else ()) or ("",):
                found = trace.find(rid) if rid else None
                verdict = found.verdict if found else ""
                tests = found.tests if found else ()
                rows.append({
                    "hazard": h.id, "title": h.title, "severity": h.severity,
                    "probability_before": h.probability_before,
                    "risk_before": policy.region(h.severity, h.probability_before), "control": cid,
                    "control_type": control.type if control else "", "requirement": rid,
                    "tests": _tests_cell(tests), "requirement_verdict": verdict,
                    "probability_after": h.probability_after,
                    "risk_after": policy.region(h.severity, h.probability_after),
                })
    return rows


def test_rows(trace: Trace) -> list[dict[str, Any]]:
    if trace.run is None:
        return []
    return [{"test": t.node_id, "outcome": t.outcome, "requirements": " ".join(t.requirements),
             "seconds": round(t.seconds, 3), "message": t.message[:200]} for t in trace.run.results]


def soup_rows(trace: Trace) -> list[dict[str, Any]]:
    return [{"name": s.name, "version": s.version, "kind": "runtime SOUP" if s.runtime else
             f"runtime SOUP ({s.extra} extra)" if s.extra else "development tool",
             "direct": "yes" if s.direct else "no", "licence": s.licence, "purpose": s.purpose,
             "known_anomalies": s.anomalies, "failure_effect": s.failure_effect, "mitigation": s.mitigation}
            for s in trace.soup]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        if not rows:
            handle.write("")
            return
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_trace(trace: Trace, out: Path, command: str) -> dict[str, Path]:
    """Write every matrix; returns the paths by name."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {"requirements": requirement_rows(trace), "risks": risk_rows(trace), "tests": test_rows(trace),
              "soup": soup_rows(trace)}
    paths = {}
    for name, rows in tables.items():
        paths[name] = out / f"{name}.csv"
        _write_csv(paths[name], rows)
    paths["gaps"] = out / "gaps.txt"
    paths["gaps"].write_text("".join(f"{g}\n" for g in trace.gaps))
    summary = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"), "revision": git_revision(),
        "version": cad.__version__, "command": command, "test_results": trace.run.source if trace.run else None,
        "verdicts": trace.counts(), "gaps": trace.gaps, "notes": trace.notes, "test_tools": tool_versions(),
        "safety_class": trace.risk.safety.safety_class,
        "requirements": [{**asdict(r.requirement), "trace": row} for r, row in zip(trace.requirements, tables["requirements"])],
    }
    paths["json"] = out / "trace.json"
    paths["json"].write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    paths["html"] = out / "index.html"
    paths["html"].write_text(render_html(trace, tables, summary))
    return paths


def render_html(trace: Trace, tables: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> str:
    """index.html (template ``verification/templates/trace_index.html``)."""
    return render(
        "trace_index.html", title="Traceability matrices", requirements=len(trace.requirements),
        counts=", ".join(f"{k}: {v}" for k, v in sorted(summary["verdicts"].items())),
        hazards=len(trace.risk.hazards), controls=len(trace.risk.controls), test_results=len(tables["tests"]),
        safety_class=trace.risk.safety.safety_class, gaps=list(trace.gaps), notes=list(trace.notes),
        requirement_rows=[[r["requirement"], r["title"], r["category"], r["safety_relevant"], r["software_items"],
                           r["passed"], r["analysis"] or "—", r["verdict"]] for r in tables["requirements"]],
        risk_rows=[[r["hazard"], r["severity"], r["probability_before"], r["risk_before"], r["control"],
                    r["requirement"], r["requirement_verdict"], r["probability_after"], r["risk_after"]]
                   for r in tables["risks"]],
        generated=summary["generated"], revision=summary["revision"], version=summary["version"],
        command=summary["command"], junit=summary["test_results"])
