"""Software bill of materials and vulnerability report of what a site installs.

The SBOM is CycloneDX JSON made by a maintained generator, cyclonedx-bom (``cyclonedx-py
environment``), from the installed metadata of this environment (which `cad trace` checks
against locked-dependencies.txt), then reduced to the site install: the mammo-cad distribution
and the runtime closure of its default install (traceability.soup.runtime_closure), with each
component's licence. The optional ``batch`` extra's components are listed with a property
naming the extra.

The vulnerability report runs a maintained scanner, pip-audit, over the exact pins of those
components (no resolution, no pip). When its vulnerability source (the PyPI JSON API or OSV)
cannot be reached from the build machine, the report says so, component by component, and the
check stays open as a release step: it is never a silent pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from traceability.requirements import REPO_ROOT
from traceability.soup import DISTRIBUTION, OPTIONAL_RUNTIME_EXTRAS, licence_of, read_lock, runtime_closure

SBOM_FILE = "mammo-cad-site.cdx.json"
VULNERABILITY_FILE = "vulnerabilities.json"
#: property naming the optional extra that brings a component (CycloneDX property taxonomy: ours)
EXTRA_PROPERTY = "mammo-cad:extra"


def _tool(name: str) -> str:
    """A console script of this environment (cyclonedx-py, pip-audit)."""
    return str(Path(sys.executable).with_name(name))


def site_components() -> dict[str, str]:
    """Canonical name -> extra ("" for the default install) of every distribution a site installs."""
    default, _, _ = runtime_closure()
    components = {name: "" for name in default}
    for extra in OPTIONAL_RUNTIME_EXTRAS:
        with_extra, _, _ = runtime_closure(extras=(extra,))
        for name in with_extra - default:
            components.setdefault(name, extra)
    return components


def make_sbom(out: Path) -> dict[str, Any]:
    """Write the site install's CycloneDX SBOM to ``out`` and return it."""
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "environment.cdx.json"
        subprocess.run([_tool("cyclonedx-py"), "environment", "--pyproject", str(REPO_ROOT / "pyproject.toml"),
                        "--output-reproducible", "--of", "JSON", "--sv", "1.6", "-o", str(full), sys.executable],
                       check=True, capture_output=True, text=True)
        bom: dict[str, Any] = json.loads(full.read_text())
    wanted = site_components()
    kept, refs = [], set()
    for component in bom.get("components", []):
        name = canonicalize_name(component.get("name", ""))
        if name not in wanted:
            continue
        if wanted[name]:
            component.setdefault("properties", []).append({"name": EXTRA_PROPERTY, "value": wanted[name]})
        if not component.get("licenses"):  # free-text License fields the generator leaves out
            stated = licence_of(metadata.metadata(component["name"]))
            if stated and stated != "see project":
                component["licenses"] = [{"license": {"name": stated, "acknowledgement": "declared"}}]
        kept.append(component)
        refs.add(component.get("bom-ref"))
    root = bom.get("metadata", {}).get("component", {})
    refs.add(root.get("bom-ref"))
    bom["components"] = sorted(kept, key=lambda c: canonicalize_name(c["name"]))
    bom["dependencies"] = [{"ref": d["ref"], "dependsOn": sorted(r for r in d.get("dependsOn", []) if r in refs)}
                           for d in bom.get("dependencies", []) if d.get("ref") in refs]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bom, indent=2, sort_keys=True) + "\n")
    return bom


def audit(out: Path, timeout_s: int = 20) -> dict[str, Any]:
    """Scan the site components' pinned versions with pip-audit; write and return the report
    (``status``: "checked" when every component was looked up, else "not checked" with why)."""
    pins = read_lock()
    components = site_components()
    missing = sorted(name for name in components if name not in pins and name != DISTRIBUTION)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "site-requirements.txt"
        requirements.write_text("".join(f"{name}=={pins[name]}\n" for name in sorted(components) if name in pins))
        raw = Path(tmp) / "audit.json"
        done = subprocess.run([_tool("pip-audit"), "-r", str(requirements), "--no-deps", "--disable-pip",
                               "--format", "json", "--progress-spinner", "off", "--timeout", str(timeout_s),
                               "-o", str(raw)], capture_output=True, text=True)
        found = json.loads(raw.read_text()) if raw.is_file() and raw.stat().st_size else {"dependencies": []}
    vulnerabilities: list[dict[str, Any]] = []
    unchecked: list[dict[str, str]] = []
    checked = 0
    for dependency in found.get("dependencies", []):
        if "skip_reason" in dependency:
            unchecked.append({"name": dependency["name"], "version": dependency.get("version", ""),
                              "reason": dependency["skip_reason"]})
            continue
        checked += 1
        for vuln in dependency.get("vulns", []):
            vulnerabilities.append({"component": dependency["name"], "version": dependency["version"],
                                    "id": vuln["id"], "aliases": vuln.get("aliases", []),
                                    "fix_versions": vuln.get("fix_versions", []),
                                    "description": (vuln.get("description") or "")[:500]})
    if not found.get("dependencies") and done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["pip-audit failed"])[-1][:300]
        unchecked = [{"name": n, "version": pins.get(n, ""), "reason": reason} for n in sorted(components) if n in pins]
    status = "checked" if checked and not unchecked and not missing else "not checked"
    # pip-audit names the component in each reason; the distinct reasons without it
    reasons = sorted({u["reason"].split(":")[0] for u in unchecked})
    report = {
        "scanner": f"pip-audit ({_version('pip-audit')}), vulnerability service PyPI",
        "status": status,
        "components": len(components), "checked": checked, "unchecked": unchecked, "not_pinned": missing,
        "vulnerabilities": vulnerabilities,
        "summary": (f"{len(vulnerabilities)} known vulnerabilities in {checked} components" if status == "checked" else
                    f"NOT CHECKED: {len(unchecked)} of {len(components)} components could not be looked up "
                    f"({'; '.join(reasons)[:300] or 'no answer'}); the vulnerability check is an open release step"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    """`python -m traceability.sbom --out DIR`: both files; exit 0 (an unchecked report is stated
    in it and in the docs, and left open as a release step)."""
    import argparse

    parser = argparse.ArgumentParser(description="SBOM and vulnerability report of the site install")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "sbom")
    args = parser.parse_args(argv)
    bom = make_sbom(args.out / SBOM_FILE)
    report = audit(args.out / VULNERABILITY_FILE)
    print(f"{len(bom['components'])} components: {args.out / SBOM_FILE}\n{report['summary']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
