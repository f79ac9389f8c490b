"""The SOUP list (IEC 62304 5.3.3, 5.3.4, 7.1.2), generated from locked-dependencies.txt.

Names and versions come from the lock file (the single source of version truth). Licence and
project links come from each installed distribution's metadata; which packages the device runs
(SOUP proper) and which serve only testing and documentation (development tools) follows from
the dependency graph of the ``mammo-cad`` distribution. Purpose, failure effect, mitigation
and the known-anomaly list of each direct runtime dependency are curated in docs/soup.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement as Pep508
from packaging.utils import canonicalize_name

from traceability.requirements import REPO_ROOT

LOCK_FILE = REPO_ROOT / "locked-dependencies.txt"
CURATED_FILE = REPO_ROOT / "docs" / "soup.yaml"
DISTRIBUTION = "mammo-cad"


@dataclass(frozen=True)
class SoupItem:
    name: str
    version: str
    runtime: bool
    direct: bool
    licence: str
    purpose: str
    required_by: tuple[str, ...]
    anomalies: str
    failure_effect: str
    mitigation: str
    used_by: tuple[str, ...]
    #: the optional extra that brings it at run time ("batch"), when the default install does not
    extra: str = ""


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    """Canonical name -> exact version, from ``name==version`` lines."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _requires(name: str, extras: tuple[str, ...] = ()) -> list[str]:
    environment = default_environment()
    out = []
    for text in metadata.requires(name) or []:
        requirement = Pep508(text)
        if requirement.marker is not None and not any(
                requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras)):
            continue
        out.append(canonicalize_name(requirement.name))
    return out


#: extras of the distribution that a site may install for a device function (`cad batch --engine ray`)
OPTIONAL_RUNTIME_EXTRAS = ("batch",)


def runtime_closure(root: str = DISTRIBUTION, extras: tuple[str, ...] = ()) -> tuple[set[str], set[str], dict[str, set[str]]]:
    """The distributions the device needs at run time (no extras, or with ``extras``), those it
    names directly, and who requires each."""
    direct = set(_requires(root, extras))
    required_by: dict[str, set[str]] = {name: {root} for name in direct}
    todo, seen = list(direct), set(direct)
    while todo:
        name = todo.pop()
        try:
            children = _requires(name)
        except metadata.PackageNotFoundError:
            continue
        for child in children:
            required_by.setdefault(child, set()).add(name)
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen, direct, required_by


def installed_bytes(names: set[str]) -> int:
    """Bytes on disk of the installed distributions ``names`` (their RECORD files; what is not
    installed here counts nothing)."""
    total = 0
    for name in names:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue
        for file in files:
            if file.size is not None:
                total += file.size
            else:  # RECORD lists itself and the .pyc files pip compiled without sizes
                path = Path(str(file.locate()))
                total += path.stat().st_size if path.is_file() else 0
    return total


def licence_of(meta: Any) -> str:
    """SPDX expression or licence name from metadata (License-Expression, License, classifiers)."""
    expression = meta.get("License-Expression")
    if expression:
        return str(expression)
    text = (meta.get("License") or "").strip()
    if text and len(text) <= 60 and "\n" not in text:
        return text
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return "; ".join(classifiers)
    return "see project" if not text else text.splitlines()[0][:60]


def anomaly_list_of(meta: Any) -> str:
    """The project's issue tracker (or home page) from its metadata."""
    urls = {}
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        urls[label.strip().lower()] = url.strip()
    for key in urls:
        if re.search(r"issue|bug|tracker", key):
            return urls[key]
    for key in ("source", "source code", "repository", "github", "homepage", "home"):
        if key in urls:
            return urls[key]
    return str(meta.get("Home-page") or "")


def load_soup(lock: Path = LOCK_FILE, curated_path: Path = CURATED_FILE) -> tuple[list[SoupItem], list[str]]:
    """The SOUP list, and the problems found (unlocked, uninstalled or uncurated packages)."""
    pins = read_lock(lock)
    curated = {canonicalize_name(c["name"]): c for c in (yaml.safe_load(curated_path.read_text()) or {}).get("soup", [])}
    runtime, direct, required_by = runtime_closure()
    # optional runtime extras (a site installs them on purpose): runtime SOUP of that extra
    optional: dict[str, str] = {}
    direct_optional: set[str] = set()
    for extra in OPTIONAL_RUNTIME_EXTRAS:
        with_extra, direct_extra, required_extra = runtime_closure(extras=(extra,))
        for name in with_extra - runtime:
            optional.setdefault(name, extra)
            required_by.setdefault(name, set()).update(required_extra.get(name, set()))
        direct_optional |= direct_extra - direct
    problems: list[str] = []
    items = []
    for name in sorted(pins):
        version = pins[name]
        try:
            meta = metadata.metadata(name)
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"SOUP {name}=={version}: in the lock file but not installed")
            continue
        if installed != version:
            problems.append(f"SOUP {name}: locked {version}, installed {installed}")
        entry = curated.get(name, {})
        is_direct = name in direct or name in direct_optional
        if is_direct and not entry:
            problems.append(f"SOUP {name}: direct runtime dependency without an entry in docs/soup.yaml")
        parents = tuple(sorted(required_by.get(name, ())))
        purpose = str(entry.get("purpose") or (f"required by {', '.join(parents)}" if parents else
                                                "test and documentation tooling"))
        items.append(SoupItem(
            name=str(meta.get("Name") or name), version=version, runtime=name in runtime, direct=is_direct,
            licence=str(entry.get("licence") or licence_of(meta)), purpose=purpose, required_by=parents,
            anomalies=str(entry.get("anomalies") or anomaly_list_of(meta)),
            failure_effect=str(entry.get("failure_effect") or ""), mitigation=str(entry.get("mitigation") or ""),
            used_by=tuple(str(u) for u in entry.get("used_by") or ()), extra=optional.get(name, ""),
        ))
    for name in sorted(set(curated) - set(pins)):
        problems.append(f"docs/soup.yaml: {name} is not in locked-dependencies.txt")
    for name in sorted(runtime - set(pins)):
        problems.append(f"SOUP {name}: needed at run time but not pinned in locked-dependencies.txt")
    return items, problems
