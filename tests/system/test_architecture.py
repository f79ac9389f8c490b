"""The architecture the build checks (SRS-PRD-007) and the device apart from tooling (SRS-PRD-008)."""

from __future__ import annotations

import json
import pkgutil
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cad
from traceability.architecture import contract_gaps, load_architecture, load_contracts

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: the development distribution's libraries and packages, and the torch side: a site has none of them
TOOLING = ("matplotlib", "openpyxl", "jsonschema", "yaml", "hypothesis", "pytest",
           "cad_tools", "verification", "traceability", "cad_torch", "torch", "torchvision", "onnx", "onnxscript")
DEVICE_VERBS = {"inspect", "detect", "export", "serve", "audit", "outcomes", "batch", "deidentify"}
TOOLING_VERBS = {"phantom", "train", "bench", "evaluate", "reader-study", "trace"}


def tool(name: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / name), *args], capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.mark.req("SRS-PRD-007")
def test_import_contracts_hold_and_match_the_software_items() -> None:
    result = tool("lint-imports")
    assert result.returncode == 0, result.stdout[-3000:]
    contracts = load_contracts(REPO / "pyproject.toml")
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout
    assert contract_gaps(load_architecture(), contracts) == []


@pytest.mark.req("SRS-PRD-007")
def test_an_upward_import_breaks_the_layers_contract(tmp_path: Path) -> None:
    for module, text in {"low/__init__.py": "", "low/a.py": "import high.b\n", "high/__init__.py": "",
                         "high/b.py": "import low.a\n"}.items():
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text(text)
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""
        [importlinter]
        root_packages = low
            high
        [importlinter:contract:layers]
        name = layers
        type = layers
        layers = high
            low
        """))
    result = tool("lint-imports", cwd=tmp_path)
    assert result.returncode == 1 and "low.a -> high.b" in result.stdout


@pytest.mark.req("SRS-PRD-007")
def test_lint_and_strict_types_pass() -> None:
    lint = tool("ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout[-3000:]
    types = tool("mypy")
    assert types.returncode == 0, types.stdout[-3000:]
    assert "Success: no issues found" in types.stdout


@pytest.mark.req("SRS-PRD-008")
def test_the_device_runs_without_tooling_or_the_torch_side() -> None:
    """Every device module imports, and `cad` offers exactly the device verbs, where the
    development distribution's libraries and packages and the torch side cannot be imported (as
    at a site)."""
    device = sorted(m.name for m in pkgutil.walk_packages(cad.__path__, "cad.") if m.name != "cad.__main__")
    script = textwrap.dedent(f"""
        import importlib, importlib.abc, json, sys
        class Absent(importlib.abc.MetaPathFinder):  # as at a site: these cannot be found
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {list(TOOLING)!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, Absent())
        for name in {device!r}:
            importlib.import_module(name)
        from cad.cli import app, load_plugins
        load_plugins()
        verbs = {{c.name or c.callback.__name__ for c in app.registered_commands}}
        verbs |= {{g.name for g in app.registered_groups}}
        print(json.dumps(sorted(verbs)))
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(json.loads(result.stdout.splitlines()[-1])) == DEVICE_VERBS
    assert len(device) > 40


#: the repository's distributions: pyproject file -> what it is
DISTRIBUTIONS = {"pyproject.toml": "mammo-cad", "distributions/mammo-cad-torch/pyproject.toml": "mammo-cad-torch",
                 "distributions/mammo-cad-dev/pyproject.toml": "mammo-cad-dev"}


@pytest.mark.req("SRS-PRD-008")
def test_every_package_belongs_to_one_distribution_and_the_site_one_is_the_device_alone() -> None:
    """The boundary is the layout: each package at the repository root ships in exactly one
    distribution, the site's (mammo-cad) holds `cad` alone, and the contracts name whole packages
    (a new device package is covered without editing them)."""
    import fnmatch
    import tomllib

    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    owners: dict[str, list[str]] = {name: [] for name in packages}
    for path, distribution in DISTRIBUTIONS.items():
        config = tomllib.loads((REPO / path).read_text())
        assert config["project"]["name"] == distribution
        include = config["tool"]["setuptools"]["packages"]["find"]["include"]
        for name in packages:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in include):
                owners[name].append(distribution)
    assert all(len(found) == 1 for found in owners.values()), owners
    assert [name for name, found in owners.items() if found == ["mammo-cad"]] == ["cad"]
    contracts = load_contracts(REPO / "pyproject.toml")
    assert contracts["site-without-torch"]["source_modules"] == ["cad"]
    assert set(contracts["device-independent-of-tooling"]["source_modules"]) == {"cad", "cad_torch"}
    assert {"cad_tools", "verification", "traceability"} <= set(contracts["device-independent-of-tooling"]["forbidden_modules"])
    assert "ignore_imports" not in contracts["site-without-torch"]


@pytest.mark.req("SRS-PRD-008")
def test_the_device_soup_holds_none_of_the_dev_extra() -> None:
    from traceability.soup import load_soup

    items, problems = load_soup()
    device = {i.name.lower() for i in items if i.runtime}
    assert problems == []
    # (packaging stays device SOUP: highdicom and onnxruntime require it)
    assert not device & {"matplotlib", "openpyxl", "jsonschema", "pyyaml", "hypothesis", "pytest",
                         "import-linter", "ruff", "mypy", "sphinx"}
    assert {"pydicom", "highdicom", "onnxruntime", "numpy"} <= device
    # the site install runs without the PyTorch side (SRS-RT-009): it is development SOUP only
    assert not device & {"torch", "torchvision", "onnx", "onnxscript", "triton"}
    assert not any(name.startswith(("nvidia-", "cuda-")) for name in device)


@pytest.mark.req("SRS-PRD-001", "SRS-PRD-008")
def test_help_lists_every_verb_where_the_tooling_is_installed() -> None:
    result = subprocess.run([sys.executable, "-m", "cad.cli", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    for verb in DEVICE_VERBS | TOOLING_VERBS:
        assert verb in result.stdout, verb
    assert shutil.which("cad", path=str(BIN)) is not None
