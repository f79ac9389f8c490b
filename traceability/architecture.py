"""Software items (docs/software-items.yaml): modules, interfaces, allocated requirements."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from traceability.requirements import REPO_ROOT

ITEMS_FILE = REPO_ROOT / "docs" / "software-items.yaml"
CONTRACTS_FILE = REPO_ROOT / "pyproject.toml"
#: the contracts (pyproject.toml [tool.importlinter]) the software items must agree with
LAYERS_CONTRACT = "device-layers"
DEVICE_CONTRACT = "device-independent-of-tooling"
#: the package root: holds only the version, imported by every layer
ROOT_MODULE = "cad/__init__.py"
#: the packages whose modules must each belong to one software item: the device (cad), its torch
#: side (cad_torch) and the development and QA tooling (the rest)
CODE_ROOTS = ("cad", "cad_torch", "cad_tools", "verification", "traceability")


@dataclass(frozen=True)
class SoftwareItem:
    id: str
    name: str
    device: bool
    patterns: tuple[str, ...]
    interface: str
    requirements: tuple[str, ...]
    #: the import-contract layers (packages, e.g. ``cad.io``) the item's modules live in
    layers: tuple[str, ...] = ()


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
                     tuple(str(r) for r in i.get("requirements", [])), tuple(str(x) for x in i.get("layers", [])))
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


def load_contracts(path: Path = CONTRACTS_FILE) -> dict[str, dict[str, Any]]:
    """The import-linter contracts of ``path`` (pyproject.toml), by ID."""
    config = tomllib.loads(path.read_text()).get("tool", {}).get("importlinter", {})
    return {str(c.get("id")): c for c in config.get("contracts", [])}


def _package_of(module: str) -> str:
    """``cad/io/loader.py`` -> ``cad.io.loader``; ``cad/io/__init__.py`` -> ``cad.io``."""
    parts = Path(module).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _within(module: str, package: str) -> bool:
    name = _package_of(module)
    return name == package or name.startswith(package + ".")


def contract_gaps(architecture: Architecture, contracts: dict[str, dict[str, Any]]) -> list[str]:
    """Where docs/software-items.yaml and the import contracts disagree: a device item must name
    its layers, every one a layer of the layers contract and a source of the device contract, and
    each of its modules must lie in one of them; a tooling item's modules must lie in what the
    device contract forbids the device to import."""
    layers_contract, device_contract = contracts.get(LAYERS_CONTRACT), contracts.get(DEVICE_CONTRACT)
    if layers_contract is None or device_contract is None:
        return [f"pyproject.toml: import contract {LAYERS_CONTRACT if layers_contract is None else DEVICE_CONTRACT} "
                "is missing"]
    layers = {name.strip() for layer in layers_contract.get("layers", []) for name in str(layer).split("|")}
    sources = set(device_contract.get("source_modules", []))
    forbidden = set(device_contract.get("forbidden_modules", []))
    gaps = []
    for item in architecture.items:
        modules = [m for m in architecture.modules_of(item.id) if m != ROOT_MODULE]
        if item.device:
            if not item.layers:
                gaps.append(f"{item.id}: device item names no layer of the import contracts")
            for layer in item.layers:
                if layer not in layers:
                    gaps.append(f"{item.id}: layer {layer} is not a layer of contract {LAYERS_CONTRACT}")
                elif not any(layer == source or layer.startswith(source + ".") for source in sources):
                    gaps.append(f"{item.id}: layer {layer} is not covered by contract {DEVICE_CONTRACT}")
            for module in modules:
                if item.layers and not any(_within(module, layer) for layer in item.layers):
                    gaps.append(f"{item.id}: {module} lies outside its layers ({', '.join(item.layers)})")
        else:
            for module in modules:
                if not any(_within(module, package) for package in forbidden):
                    gaps.append(f"{item.id}: tooling module {module} is not forbidden to the device by "
                                f"contract {DEVICE_CONTRACT}")
    return gaps
