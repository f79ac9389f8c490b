"""The site install's SBOM (cyclonedx-bom) and vulnerability report (pip-audit), as `make sbom`
writes them (SRS-SEC-001)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "locked-dependencies.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


@pytest.mark.slow
@pytest.mark.req("SRS-SEC-001")
def test_sbom_lists_the_site_install_and_the_vulnerability_report_never_passes_silently(tmp_path: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    ran = subprocess.run([sys.executable, "-m", "traceability.sbom", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    text = (tmp_path / "mammo-cad-site.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    root = bom["metadata"]["component"]
    assert (root["name"], root["version"]) == ("mammo-cad", project["version"])
    assert root["licenses"][0]["license"]["id"] == "AGPL-3.0-or-later"
    components = {canonicalize_name(c["name"]): c for c in bom["components"]}
    pins = _lock()
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in components, f"direct dependency {name} missing"
        assert components[name]["version"] == pins[name] and components[name].get("licenses"), name
        assert components[name]["purl"].startswith(f"pkg:pypi/{name}@{pins[name]}")
    for tool in ("torch", "torchvision", "pytest", "sphinx", "matplotlib"):
        assert tool not in components, f"{tool} is a development tool, not installed at a site"
    assert {"name": "mammo-cad:extra", "value": "batch"} in components["ray"]["properties"]
    assert all(c["version"] == pins[name] and c.get("licenses") for name, c in components.items())

    report = json.loads((tmp_path / "vulnerabilities.json").read_text())
    assert report["components"] == len(components)
    if report["status"] == "checked":
        assert report["checked"] == len(components) and not report["unchecked"]
    else:
        assert report["status"] == "not checked" and report["summary"].startswith("NOT CHECKED")
        assert {canonicalize_name(u["name"]) for u in report["unchecked"]} == set(components)
        assert all(u["reason"] for u in report["unchecked"])
    assert report["summary"] in ran.stdout
