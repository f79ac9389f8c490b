"""The STRIDE threat model (risk/threats.yaml) is complete over the site's data flows and every
reference in it resolves (SRS-SEC-002)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from traceability.requirements import load_requirements
from traceability.risk import RISK_DIR, STRIDE, consistency_problems, load_risk

#: the data flows a hospital security review asks about (issue 19), as named in the model
FLOWS = ("C-STORE SCP", "C-STORE SCU", "DICOMweb", "Watched folder", "HTTP API and dashboard", "Model files",
         "Audit log", "Outputs")


@pytest.mark.req("SRS-SEC-002")
def test_the_threat_model_covers_every_flow_and_resolves() -> None:
    risk = load_risk()
    requirement_ids = set(load_requirements())
    assert not [p for p in consistency_problems(risk, requirement_ids) if "threats.yaml" in p]
    names = [f.name for f in risk.flows]
    for flow in FLOWS:
        assert any(flow.lower() in name.lower() for name in names), f"no data flow for {flow}"
    assert {s for t in risk.threats for s in t.stride} == set(STRIDE)
    assert {t.flow for t in risk.threats} == {f.id for f in risk.flows}


@pytest.mark.req("SRS-SEC-002")
def test_broken_threats_and_uncovered_flows_are_reported(tmp_path: Path) -> None:
    risk_dir = tmp_path / "risk"
    shutil.copytree(RISK_DIR, risk_dir)
    model = yaml.safe_load((risk_dir / "threats.yaml").read_text())
    model["flows"].append({"id": "DF-99", "name": "Unmodelled flow", "description": "x", "trust_boundary": "x"})
    model["threats"][0].update(controls=["RC-999"], requirements=["SRS-NOPE-001"], hazards=["HAZ-999"],
                               implemented_in=["cad/nowhere.py"], stride=["X"])
    (risk_dir / "threats.yaml").write_text(yaml.safe_dump(model))
    problems = consistency_problems(load_risk(risk_dir), set(load_requirements()))
    first = model["threats"][0]["id"]
    for expected in ("unknown risk control RC-999", "unknown requirement SRS-NOPE-001", "unknown hazard HAZ-999",
                     "cad/nowhere.py does not exist", "STRIDE categories", "data flow DF-99 has no threat"):
        assert any(expected in p for p in problems), expected
    assert all(first in p or "DF-99" in p for p in problems if "threats.yaml" in p)
