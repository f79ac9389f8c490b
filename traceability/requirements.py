"""Load the software requirements (requirements/*.yaml), the single source of truth for SRS IDs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ID_PATTERN = re.compile(r"^SRS-[A-Z]{2,5}-\d{3}$")
REQUIRED_FIELDS = ("id", "title", "text", "rationale", "acceptance")
REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS_DIR = REPO_ROOT / "requirements"


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    text: str
    rationale: str
    acceptance: str
    source: str


class RequirementsError(ValueError):
    """The requirements files are malformed (bad ID, missing field, duplicate)."""


def load_requirements(directory: Path = REQUIREMENTS_DIR) -> dict[str, Requirement]:
    """All requirements by ID; raises :class:`RequirementsError` listing every problem."""
    problems: list[str] = []
    found: dict[str, Requirement] = {}
    for path in sorted(directory.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        for i, entry in enumerate(data.get("requirements", [])):
            where = f"{path.name} entry {i + 1}"
            missing = [f for f in REQUIRED_FIELDS if not str(entry.get(f, "")).strip()]
            if missing:
                problems.append(f"{where}: missing {', '.join(missing)}")
                continue
            rid = str(entry["id"])
            if not ID_PATTERN.match(rid):
                problems.append(f"{where}: id {rid!r} is not SRS-<AREA>-<NNN>")
            if rid in found:
                problems.append(f"{where}: duplicate id {rid} (also in {found[rid].source})")
            found[rid] = Requirement(
                rid,
                str(entry["title"]).strip(),
                str(entry["text"]).strip(),
                str(entry["rationale"]).strip(),
                str(entry["acceptance"]).strip(),
                path.name,
            )
    if problems:
        raise RequirementsError("; ".join(problems))
    return found
