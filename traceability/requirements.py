"""Load the software requirements (requirements/*.yaml), the single source of truth for SRS IDs.

Each entry has ``id`` (``SRS-<AREA>-<NNN>``), ``title``, ``category``, ``text``, ``rationale``
and ``acceptance``. Optional: ``verification`` (``method: analysis`` with criteria on a
recorded measurement, for performance requirements that commands measure rather than tests)
and ``needs`` (hardware the verifying tests need, e.g. ``[gpu]``). Safety relevance and the
risk controls a requirement implements are not written here: they follow from risk/controls.yaml,
so that each link is stated once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ID_PATTERN = re.compile(r"^SRS-[A-Z]{2,5}-\d{3}$")
REQUIRED_FIELDS = ("id", "title", "category", "text", "rationale", "acceptance")
CATEGORIES = ("product", "functional", "performance", "output", "dicom-conformance", "security-privacy", "tooling")
#: what each category means in the SRS
CATEGORY_TITLES = {
    "product": "Product and installation",
    "functional": "Functional",
    "performance": "Performance",
    "output": "Outputs a reader sees",
    "dicom-conformance": "DICOM conformance",
    "security-privacy": "Security and privacy",
    "tooling": "Verification and development tooling",
}
OPERATORS = (">=", "<=", ">", "<", "==")
ENVIRONMENTS = ("gpu",)
REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS_DIR = REPO_ROOT / "requirements"


@dataclass(frozen=True)
class Criterion:
    """One figure a measurement must reach: ``path`` into the evidence JSON, ``op``, ``value``."""

    path: tuple[str, ...]
    op: str
    value: float
    label: str

    def holds(self, measured: float) -> bool:
        return {">=": measured >= self.value, "<=": measured <= self.value, ">": measured > self.value,
                "<": measured < self.value, "==": measured == self.value}[self.op]


@dataclass(frozen=True)
class Analysis:
    """Verification by analysis of a recorded measurement (a JSON file in the repository)."""

    evidence: str
    criteria: tuple[Criterion, ...]


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    text: str
    rationale: str
    acceptance: str
    source: str
    category: str = "functional"
    analysis: Analysis | None = None
    needs: tuple[str, ...] = field(default_factory=tuple)

    @property
    def area(self) -> str:
        return self.id.split("-")[1]


class RequirementsError(ValueError):
    """The requirements files are malformed (bad ID, missing field, duplicate)."""


def _analysis(entry: dict[str, Any], where: str, problems: list[str]) -> Analysis | None:
    raw = entry.get("verification")
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("method") != "analysis" or not raw.get("evidence"):
        problems.append(f"{where}: verification needs method: analysis and an evidence file")
        return None
    criteria = []
    for item in raw.get("criteria") or []:
        try:
            if item["op"] not in OPERATORS:
                raise ValueError(item["op"])
            criteria.append(Criterion(tuple(str(p) for p in item["path"]), item["op"], float(item["value"]),
                                      str(item.get("label") or "/".join(map(str, item["path"])))))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{where}: malformed verification criterion ({exc})")
    if not criteria:
        problems.append(f"{where}: verification by analysis needs at least one criterion")
    return Analysis(str(raw["evidence"]), tuple(criteria))


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
            category = str(entry["category"])
            if category not in CATEGORIES:
                problems.append(f"{where}: category {category!r} is not one of {', '.join(CATEGORIES)}")
            needs = tuple(str(n) for n in entry.get("needs") or ())
            unknown_needs = [n for n in needs if n not in ENVIRONMENTS]
            if unknown_needs:
                problems.append(f"{where}: needs {unknown_needs} (known: {', '.join(ENVIRONMENTS)})")
            found[rid] = Requirement(
                rid,
                str(entry["title"]).strip(),
                str(entry["text"]).strip(),
                str(entry["rationale"]).strip(),
                str(entry["acceptance"]).strip(),
                path.name,
                category,
                _analysis(entry, where, problems),
                needs,
            )
    if problems:
        raise RequirementsError("; ".join(problems))
    return found
