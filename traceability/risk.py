"""ISO 14971 risk management sources (risk/*.yaml): policy, hazards, controls, known anomalies,
and the IEC 62304 software safety class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from traceability.requirements import REPO_ROOT

RISK_DIR = REPO_ROOT / "risk"
REGIONS = {"A": "acceptable", "R": "reduce as far as possible", "U": "unacceptable"}


@dataclass(frozen=True)
class Level:
    level: int
    name: str
    description: str


@dataclass(frozen=True)
class Policy:
    severity: tuple[Level, ...]
    probability: tuple[Level, ...]
    matrix: tuple[tuple[str, ...], ...]
    benefit: str

    def region(self, severity: int, probability: int) -> str:
        """A, R or U for a severity and probability (1-based)."""
        return self.matrix[severity - 1][probability - 1]


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    type: str
    description: str
    requirements: tuple[str, ...]
    #: what is still missing (for a planned control, or a partly implemented one)
    gap: str | None
    #: "implemented" or "planned" (a planned control blocks clinical release)
    status: str = "implemented"

    @property
    def planned(self) -> bool:
        return self.status == "planned"


@dataclass(frozen=True)
class Hazard:
    id: str
    title: str
    hazard: str
    sequence: str
    hazardous_situation: str
    harm: str
    severity: int
    probability_before: int
    controls: tuple[str, ...]
    probability_after: int
    residual: str


@dataclass(frozen=True)
class Anomaly:
    """A known residual anomaly (IEC 62304 5.8.2/5.8.3): a requirement not met, evaluated and
    accepted for this release."""

    id: str
    title: str
    requirements: tuple[str, ...]
    description: str
    hazards: tuple[str, ...]
    evaluation: str
    status: str
    reference: str


@dataclass(frozen=True)
class SafetyClass:
    software_system: str
    safety_class: str
    rationale: str
    items: str


#: STRIDE categories of the threat model
STRIDE = {"S": "spoofing", "T": "tampering", "R": "repudiation", "I": "information disclosure",
          "D": "denial of service", "E": "elevation of privilege"}
RESIDUAL_LEVELS = ("low", "medium", "high")


@dataclass(frozen=True)
class DataFlow:
    """A data flow of the threat model (risk/threats.yaml) and the trust boundary it crosses."""

    id: str
    name: str
    description: str
    trust_boundary: str


@dataclass(frozen=True)
class Threat:
    """A STRIDE threat on a data flow, with the controls and requirements that answer it."""

    id: str
    flow: str
    stride: tuple[str, ...]
    threat: str
    controls: tuple[str, ...]
    requirements: tuple[str, ...]
    implemented_in: tuple[str, ...]
    hazards: tuple[str, ...]
    residual_risk: str
    residual: str


@dataclass(frozen=True)
class RiskFile:
    policy: Policy
    hazards: tuple[Hazard, ...]
    controls: tuple[Control, ...]
    anomalies: tuple[Anomaly, ...]
    safety: SafetyClass
    flows: tuple[DataFlow, ...] = ()
    threats: tuple[Threat, ...] = ()

    def control(self, control_id: str) -> Control | None:
        return next((c for c in self.controls if c.id == control_id), None)

    def controls_of(self, requirement: str) -> list[str]:
        return [c.id for c in self.controls if requirement in c.requirements]

    def hazards_of(self, control_id: str) -> list[str]:
        return [h.id for h in self.hazards if control_id in h.controls]


def _levels(raw: list[dict[str, Any]]) -> tuple[Level, ...]:
    return tuple(Level(int(r["level"]), str(r["name"]), str(r.get("description", ""))) for r in raw)


def _read(directory: Path, name: str) -> Any:
    return yaml.safe_load((directory / name).read_text()) or {}


def load_risk(directory: Path = RISK_DIR) -> RiskFile:
    policy_raw = _read(directory, "policy.yaml")
    policy = Policy(_levels(policy_raw["severity"]), _levels(policy_raw["probability"]),
                    tuple(tuple(str(c) for c in row) for row in policy_raw["matrix"]), str(policy_raw.get("benefit", "")))
    controls = tuple(
        Control(str(c["id"]), str(c["title"]), str(c["type"]), str(c["description"]).strip(),
                tuple(str(r) for r in c.get("requirements") or []),
                str(c["gap"]).strip() if c.get("gap") else None, str(c.get("status", "implemented")))
        for c in _read(directory, "controls.yaml")["controls"]
    )
    hazards = tuple(
        Hazard(str(h["id"]), str(h["title"]), str(h["hazard"]).strip(), str(h["sequence"]).strip(),
               str(h["hazardous_situation"]).strip(), str(h["harm"]).strip(), int(h["severity"]),
               int(h["probability_before"]), tuple(str(c) for c in h.get("controls") or []),
               int(h["probability_after"]), str(h["residual"]).strip())
        for h in _read(directory, "hazards.yaml")["hazards"]
    )
    anomalies_path = directory / "anomalies.yaml"
    anomalies = tuple(
        Anomaly(str(a["id"]), str(a["title"]), tuple(str(r) for r in a.get("requirements") or []),
                str(a["description"]).strip(), tuple(str(h) for h in a.get("hazards") or []),
                str(a["evaluation"]).strip(), str(a.get("status", "open")), str(a.get("reference", "")))
        for a in (_read(directory, "anomalies.yaml").get("anomalies") or [] if anomalies_path.is_file() else [])
    )
    safety_raw = _read(directory, "safety-class.yaml")
    safety = SafetyClass(str(safety_raw["software_system"]), str(safety_raw["class"]),
                         str(safety_raw["rationale"]).strip(), str(safety_raw.get("items", "")).strip())
    threats_raw = _read(directory, "threats.yaml") if (directory / "threats.yaml").is_file() else {}
    flows = tuple(DataFlow(str(f["id"]), str(f["name"]), str(f["description"]).strip(), str(f["trust_boundary"]))
                  for f in threats_raw.get("flows") or [])
    threats = tuple(
        Threat(str(t["id"]), str(t["flow"]), tuple(str(x) for x in t.get("stride") or []), str(t["threat"]).strip(),
               tuple(str(x) for x in t.get("controls") or []), tuple(str(x) for x in t.get("requirements") or []),
               tuple(str(x) for x in t.get("implemented_in") or []), tuple(str(x) for x in t.get("hazards") or []),
               str(t["residual_risk"]), str(t["residual"]).strip())
        for t in threats_raw.get("threats") or []
    )
    return RiskFile(policy, hazards, controls, anomalies, safety, flows, threats)


def consistency_problems(risk: RiskFile, requirement_ids: set[str]) -> list[str]:
    """Broken references and policy violations inside the risk file."""
    problems: list[str] = []
    sizes = (len(risk.policy.severity), len(risk.policy.probability))
    if len(risk.policy.matrix) != sizes[0] or any(len(row) != sizes[1] for row in risk.policy.matrix):
        problems.append(f"risk/policy.yaml: the matrix must be {sizes[0]} x {sizes[1]}")
    if any(cell not in REGIONS for row in risk.policy.matrix for cell in row):
        problems.append("risk/policy.yaml: matrix cells must be A, R or U")
    control_ids = {c.id for c in risk.controls}
    for hazard in risk.hazards:
        for cid in hazard.controls:
            if cid not in control_ids:
                problems.append(f"{hazard.id}: unknown risk control {cid}")
        if hazard.probability_after > hazard.probability_before:
            problems.append(f"{hazard.id}: probability after controls exceeds the probability before")
        if not (1 <= hazard.severity <= sizes[0] and 1 <= hazard.probability_after <= sizes[1]
                and 1 <= hazard.probability_before <= sizes[1]):
            problems.append(f"{hazard.id}: severity or probability outside the policy's scales")
        elif risk.policy.region(hazard.severity, hazard.probability_after) == "U":
            problems.append(f"{hazard.id}: residual risk (S{hazard.severity}, P{hazard.probability_after}) is unacceptable")
    for control in risk.controls:
        if control.status not in ("implemented", "planned"):
            problems.append(f"{control.id}: status {control.status!r} is neither implemented nor planned")
        for rid in control.requirements:
            if rid not in requirement_ids:
                problems.append(f"{control.id}: unknown requirement {rid}")
    hazard_ids = {h.id for h in risk.hazards}
    problems += _threat_problems(risk, requirement_ids, control_ids, hazard_ids)
    for anomaly in risk.anomalies:
        for rid in anomaly.requirements:
            if rid not in requirement_ids:
                problems.append(f"{anomaly.id}: unknown requirement {rid}")
        for hid in anomaly.hazards:
            if hid not in hazard_ids:
                problems.append(f"{anomaly.id}: unknown hazard {hid}")
    return problems


def _threat_problems(risk: RiskFile, requirement_ids: set[str], control_ids: set[str],
                     hazard_ids: set[str]) -> list[str]:
    """Broken references in the threat model, and flows no threat covers."""
    problems: list[str] = []
    flow_ids = {f.id for f in risk.flows}
    for threat in risk.threats:
        where = f"risk/threats.yaml {threat.id}"
        if threat.flow not in flow_ids:
            problems.append(f"{where}: unknown data flow {threat.flow}")
        if not threat.stride or any(s not in STRIDE for s in threat.stride):
            problems.append(f"{where}: STRIDE categories must be some of {', '.join(STRIDE)}")
        planned = any(c.planned for c in map(risk.control, threat.controls) if c is not None)
        if not threat.controls or not (threat.requirements or planned):
            problems.append(f"{where}: a threat needs its controls and the requirements that verify them "
                            "(none only while a control is planned)")
        problems += [f"{where}: unknown risk control {c}" for c in threat.controls if c not in control_ids]
        problems += [f"{where}: unknown requirement {r}" for r in threat.requirements if r not in requirement_ids]
        problems += [f"{where}: unknown hazard {h}" for h in threat.hazards if h not in hazard_ids]
        problems += [f"{where}: {m} does not exist" for m in threat.implemented_in if not (REPO_ROOT / m).exists()]
        if threat.residual_risk not in RESIDUAL_LEVELS:
            problems.append(f"{where}: residual_risk must be one of {', '.join(RESIDUAL_LEVELS)}")
    covered = {t.flow for t in risk.threats}
    problems += [f"risk/threats.yaml: data flow {f.id} has no threat" for f in risk.flows if f.id not in covered]
    return problems
