"""The traceability matrices and their gaps, built from the sources of truth.

requirement -> software items -> tests (and analyses) -> result, and
hazard -> risk control -> requirement -> verifying tests -> result.

A *gap* makes `cad trace` exit non-zero: a requirement without a passing verification, a
failing test, a risk control without a verified requirement, a test naming an unknown
requirement, anything orphaned (an unallocated requirement or module, an item without
requirements, a control no hazard uses), a broken reference, an uncurated SOUP package, or a
known anomaly whose requirement now passes (close it). Declared known anomalies and
requirements whose tests need hardware that is absent are reported, not counted as gaps,
unless ``strict``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traceability.architecture import Architecture, contract_gaps, load_architecture, load_contracts
from traceability.requirements import REPO_ROOT, Analysis, Requirement, load_requirements
from traceability.results import FAILED, PASSED, SKIPPED, TestRun
from traceability.risk import RiskFile, consistency_problems, load_risk
from traceability.soup import SoupItem, load_soup

VERIFIED, NOT_MET, ANOMALY, ENVIRONMENT, UNVERIFIED, FAILING = (
    "verified", "not met", "known anomaly", "needs hardware", "not verified", "test failed")
#: a risk control that is planned, not implemented
PLANNED = "planned"
#: every verdict a requirement or a risk control can have
VERDICTS = (VERIFIED, NOT_MET, ANOMALY, ENVIRONMENT, UNVERIFIED, FAILING, PLANNED)


@dataclass(frozen=True)
class CriterionResult:
    label: str
    op: str
    target: float
    measured: float | None
    holds: bool


@dataclass(frozen=True)
class RequirementTrace:
    requirement: Requirement
    items: tuple[str, ...]
    controls: tuple[str, ...]
    hazards: tuple[str, ...]
    tests: tuple[tuple[str, str], ...]
    analysis: tuple[CriterionResult, ...]
    anomalies: tuple[str, ...]
    verdict: str

    @property
    def safety_relevant(self) -> bool:
        return bool(self.controls)


@dataclass
class Trace:
    requirements: list[RequirementTrace]
    architecture: Architecture
    risk: RiskFile
    soup: list[SoupItem]
    run: TestRun | None
    gaps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def find(self, rid: str) -> RequirementTrace | None:
        """The trace of requirement ``rid``, or None for an ID no requirement has."""
        return next((r for r in self.requirements if r.requirement.id == rid), None)

    def requirement(self, rid: str) -> RequirementTrace:
        found = self.find(rid)
        if found is None:
            raise KeyError(rid)
        return found

    def control_verdict(self, control_id: str) -> str:
        control = self.risk.control(control_id)
        if control is not None and control.planned:
            return PLANNED
        if control is None or not control.requirements:
            return UNVERIFIED
        verdicts = [found.verdict for found in map(self.find, control.requirements) if found is not None]
        if not verdicts or any(v in (FAILING, NOT_MET, UNVERIFIED) for v in verdicts):
            return UNVERIFIED
        pending = [v for v in verdicts if v != VERIFIED]
        return pending[0] if pending else VERIFIED

    def threat_verdict(self, threat_id: str) -> str:
        """The verification verdict of a threat's answer: that of its requirements, and planned
        while any of its controls is."""
        threat = next((t for t in self.risk.threats if t.id == threat_id), None)
        if threat is None:
            return UNVERIFIED
        if any(c.planned for c in map(self.risk.control, threat.controls) if c is not None):
            return PLANNED
        verdicts = [found.verdict for found in map(self.find, threat.requirements) if found is not None]
        if not verdicts or any(v in (FAILING, NOT_MET, UNVERIFIED) for v in verdicts):
            return UNVERIFIED
        pending = [v for v in verdicts if v != VERIFIED]
        return pending[0] if pending else VERIFIED

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.requirements:
            out[r.verdict] = out.get(r.verdict, 0) + 1
        return out


def _lookup(data: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return float(data) if isinstance(data, (int, float)) else None


def evaluate_analysis(analysis: Analysis, root: Path = REPO_ROOT) -> list[CriterionResult]:
    try:
        evidence = json.loads((root / analysis.evidence).read_text())
    except (OSError, ValueError):
        evidence = {}
    out = []
    for criterion in analysis.criteria:
        measured = _lookup(evidence, criterion.path)
        out.append(CriterionResult(criterion.label, criterion.op, criterion.value, measured,
                                   measured is not None and criterion.holds(measured)))
    return out


def _verdict(requirement: Requirement, tests: list[tuple[str, str]], analysis: list[CriterionResult],
             anomalies: list[str], environments: set[str]) -> str:
    outcomes = [o for _, o in tests]
    if FAILED in outcomes:
        return FAILING
    analysis_ok = all(c.holds for c in analysis)
    if analysis and not analysis_ok:
        return ANOMALY if anomalies else NOT_MET
    if PASSED in outcomes or (analysis and analysis_ok):
        return VERIFIED
    if outcomes and all(o == SKIPPED for o in outcomes) and set(requirement.needs) - environments:
        return ENVIRONMENT
    return ANOMALY if anomalies else UNVERIFIED


def detected_environments() -> set[str]:
    """The test environments this machine provides (``gpu`` with a CUDA device), which decide
    whether a hardware-dependent requirement without a passing test is a gap."""
    import torch

    return {"gpu"} if torch.cuda.is_available() else set()


def build_trace(run: TestRun | None, environments: set[str] | None = None, strict: bool = False,
                root: Path = REPO_ROOT) -> Trace:
    """Join every source; ``environments`` are the hardware present where the tests ran."""
    requirements = load_requirements(root / "requirements")
    architecture = load_architecture(root / "docs" / "software-items.yaml", root)
    risk = load_risk(root / "risk")
    soup, soup_problems = load_soup(root / "locked-dependencies.txt", root / "docs" / "soup.yaml")
    environments = environments or set()
    gaps: list[str] = []
    notes: list[str] = []
    gaps += consistency_problems(risk, set(requirements))
    gaps += soup_problems
    anomalies_of: dict[str, list[str]] = {}
    for anomaly in risk.anomalies:
        if anomaly.status == "open":
            for rid in anomaly.requirements:
                anomalies_of.setdefault(rid, []).append(anomaly.id)
    traces = []
    for rid, requirement in sorted(requirements.items()):
        tests = [(t.node_id, t.outcome) for t in run.of(rid)] if run else []
        analysis = evaluate_analysis(requirement.analysis, root) if requirement.analysis else []
        controls = risk.controls_of(rid)
        hazards = sorted({h for c in controls for h in risk.hazards_of(c)})
        verdict = _verdict(requirement, tests, analysis, anomalies_of.get(rid, []), environments)
        traces.append(RequirementTrace(requirement, tuple(architecture.items_of(rid)), tuple(controls), tuple(hazards),
                                       tuple(tests), tuple(analysis), tuple(anomalies_of.get(rid, [])), verdict))
        label = f"{rid} ({requirement.title})"
        if verdict == FAILING:
            failed = [n for n, o in tests if o == FAILED]
            gaps.append(f"{label}: test failed: {', '.join(failed)}")
        elif verdict == NOT_MET:
            missed = [f"{c.label} {c.measured} (needs {c.op} {c.target})" for c in analysis if not c.holds]
            gaps.append(f"{label}: not met by analysis: {'; '.join(missed)}")
        elif verdict == UNVERIFIED:
            gaps.append(f"{label}: no passing test" + ("" if run else " (no test results given)"))
        elif verdict == ENVIRONMENT:
            (gaps if strict else notes).append(
                f"{label}: not verified in this run: its tests need {', '.join(requirement.needs)}, which this "
                "machine lacks (run `make test` there and `cad trace --strict` for a release)")
        elif verdict == ANOMALY:
            (gaps if strict else notes).append(
                f"{label}: not met; known anomaly {', '.join(anomalies_of[rid])} (risk/anomalies.yaml)")
        elif anomalies_of.get(rid):
            gaps.append(f"{label}: verified now, but known anomaly {', '.join(anomalies_of[rid])} is still open: close it")
        if not architecture.items_of(rid):
            gaps.append(f"{label}: not allocated to any software item (docs/software-items.yaml)")
    if run:
        for result in run.results:
            unknown = [r for r in result.requirements if r not in requirements]
            if unknown:
                gaps.append(f"test {result.node_id}: unknown requirement {', '.join(unknown)}")
            if not result.requirements:
                gaps.append(f"test {result.node_id}: names no requirement")
    for item in architecture.items:
        if not item.requirements:
            gaps.append(f"{item.id}: software item without requirements")
        for rid in item.requirements:
            if rid not in requirements:
                gaps.append(f"{item.id}: unknown requirement {rid}")
        if not architecture.modules_of(item.id):
            gaps.append(f"{item.id}: no module matches {', '.join(item.patterns)}")
    gaps += contract_gaps(architecture, load_contracts(root / "pyproject.toml"))
    for module, owners in sorted(architecture.modules.items()):
        if len(owners) != 1:
            gaps.append(f"{module}: belongs to {len(owners)} software items (must be exactly one)")
    trace = Trace(traces, architecture, risk, soup, run, gaps, notes)
    used = {c for h in risk.hazards for c in h.controls}
    for control in risk.controls:
        if control.id not in used:
            gaps.append(f"{control.id} ({control.title}): risk control used by no hazard")
        if control.planned:
            (gaps if strict else notes).append(
                f"{control.id} ({control.title}): planned risk control, not implemented yet (blocks clinical "
                f"release; hazards {', '.join(risk.hazards_of(control.id))})")
        elif not control.requirements:
            gaps.append(f"{control.id} ({control.title}): implemented by no requirement")
        elif trace.control_verdict(control.id) == UNVERIFIED:
            gaps.append(f"{control.id} ({control.title}): no verified requirement implements it")
    for hazard in risk.hazards:
        if not hazard.controls:
            gaps.append(f"{hazard.id} ({hazard.title}): no risk control")
    return trace
