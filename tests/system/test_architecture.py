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
#: the development extra's libraries and the tooling packages: a site does not have them
TOOLING = ("matplotlib", "openpyxl", "jsonschema", "yaml", "hypothesis", "pytest",
           "cad.tools", "verification", "traceability")
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
def test_the_device_runs_without_tooling_or_the_dev_extra() -> None:
    """Every device module imports, and `cad` offers exactly the device verbs, where the dev
    extra's libraries and the tooling packages cannot be imported (as at a site)."""
    device = sorted(m.name for m in pkgutil.walk_packages(cad.__path__, "cad.")
                    if not m.name.startswith("cad.tools") and m.name != "cad.__main__")
    script = textwrap.dedent(f"""
        import importlib, json, sys
        for name in {list(TOOLING)!r}:
            sys.modules[name] = None  # importing it now raises ImportError
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
