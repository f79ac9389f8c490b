"""Software items (docs/software-items.yaml): modules, interfaces, allocated requirements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from traceability.requirements import REPO_ROOT

ITEMS_FILE = REPO_ROOT / "docs" / "software-items.yaml"
#: the packages whose modules must each belong to one software item
CODE_ROOTS = ("cad", "verification", "traceability")


@dataclass(frozen=True)
class SoftwareItem:
    id: str
    name: str
    device: bool
    patterns: tuple[str, ...]
    interface: str
    requirements: tuple[str, ...]


@dataclass(frozen=True)
class Architecture:
    system: str
    items: tuple[SoftwareItem, ...]
    #: module path (relative to the repository) -> item IDs it matches
    modules: dict[str, tuple[str, ...]]

    def item(self, item_id: str) -> SoftwareItem:
        return next(i for i in self.items if i.id == item_id)

    def items_of(self, requirement: str) -> list[str]:
        return [i.id for i in self.items if requirement in i.requirements]

    def modules_of(self, item_id: str) -> list[str]:
        return sorted(m for m, owners in self.modules.items() if item_id in owners)


def load_architecture(path: Path = ITEMS_FILE, root: Path = REPO_ROOT) -> Architecture:
    data = yaml.safe_load(path.read_text())
    items = tuple(
        SoftwareItem(str(i["id"]), str(i["name"]), bool(i.get("device", False)),
                     tuple(str(p) for p in i.get("modules", [])), str(i.get("interface", "")),
                     tuple(str(r) for r in i.get("requirements", [])))
        for i in data["items"]
    )
    modules: dict[str, tuple[str, ...]] = {}
    for package in CODE_ROOTS:
        for module in sorted((root / package).rglob("*.py")):
            relative = module.relative_to(root).as_posix()
            modules[relative] = tuple(i.id for i in items
                                      if any(Path(relative).match(pattern) and
                                             Path(relative).parent == Path(pattern).parent for pattern in i.patterns))
    return Architecture(str(data.get("system", "")), items, modules)
