"""The site install: `pip install mammo-cad` in a clean venv runs `cad detect` without torch (SRS-RT-009).

The venv is built from a copy of this checkout (so the repository gets no build folders),
constrained by locked-dependencies.txt like every install, with no extra: exactly what the
README tells a site to run. Packages come from the registry (pip's cache after the first run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "phantom-retinanet-r18"
#: attributes set to the time of writing (the only allowed differences between two runs)
TORCH_SIDE = ("torch", "torchvision", "onnx", "onnxscript")
#: the repository's packages that are not the device: the site wheel holds none of them
NOT_SHIPPED = ("cad_torch", "cad_tools", "verification", "traceability")


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=900, **kwargs)  # type: ignore[call-overload, no-any-return]


#: the README section whose shell block is the site recipe run here as written
RECIPE_HEADING = "### Installing at a site (no torch)"


def site_recipe() -> tuple[str, list[str]]:
    """The README's site recipe: its first line (where to install, what to analyse: the
    variables this test sets itself) and the command lines after it."""
    section = (ROOT / "README.md").read_text().split(RECIPE_HEADING, 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    first, *commands = [line for line in block.splitlines() if line.strip()]
    return first, commands


@pytest.fixture(scope="module")
def site_install(tmp_path_factory: pytest.TempPathFactory, mass_phantom_dir: Path) -> tuple[Path, Path]:
    """A clean venv made by the README's site recipe, run as written in a copy of this checkout
    (so the repository gets no build folders), and the folder its `cad detect` line wrote."""
    base = tmp_path_factory.mktemp("site")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "locked-dependencies.txt"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    # the whole repository's packages: the site recipe must install the device alone from them
    for package in ("cad", "cad_torch", "cad_tools", "verification", "traceability", "distributions",
                    "models/phantom-retinanet-r18"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    first, commands = site_recipe()
    assert first.startswith("SITE=") and "EXAM=" in first and "OUT=" in first, first
    env = {k: v for k, v in os.environ.items() if k != "CAD_MODEL_DIR"}
    env.update(SITE=str(base / "venv"), EXAM=str(mass_phantom_dir), OUT=str(base / "out"))
    for command in commands:
        done = _run(["bash", "-c", command], cwd=source, env=env)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
    return base / "venv", base / "out"


@pytest.fixture(scope="module")
def site_venv(site_install: tuple[Path, Path]) -> Path:
    """The site install's venv (no extras)."""
    return site_install[0]


@pytest.mark.slow
@pytest.mark.req("SRS-RT-009", "SRS-PRD-009")
def test_site_install_runs_detect_without_torch(site_install: tuple[Path, Path], mass_phantom_dir: Path,
                                                tmp_path: Path,
                                                without_creation_times: Callable[[Path], pydicom.Dataset]) -> None:
    """The README's recipe, as written: the site install finds the released model installed with
    it and writes what the development install writes."""
    site_venv, site_out = site_install
    python = str(site_venv / "bin" / "python")
    for module in (*TORCH_SIDE, *NOT_SHIPPED):
        probe = _run([python, "-c", f"import {module}"], cwd=site_venv)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, f"{module} is in the site install"
    help_text = _run([str(site_venv / "bin" / "cad"), "--help"]).stdout
    assert "detect" in help_text and "serve" in help_text
    installed = site_venv / "share" / "mammo-cad" / "models" / MODEL.name
    assert (installed / "manifest.json").read_bytes() == (MODEL / "manifest.json").read_bytes()

    development = _run([sys.executable, "-c", "from cad.cli import main; main()", "detect", str(mass_phantom_dir),
                        "--out", str(tmp_path / "dev"), "--model", str(MODEL)])
    assert development.returncode == 0, development.stderr
    (study,) = [p.name for p in (tmp_path / "dev").iterdir() if p.is_dir()]
    site_dir, dev_dir = site_out / study, tmp_path / "dev" / study
    assert (site_dir / "findings.json").read_bytes() == (dev_dir / "findings.json").read_bytes()
    findings = json.loads((site_dir / "findings.json").read_text())
    assert findings["findings"], "the masses are found"
    assert json.loads((site_out / "detect_run.json").read_text())["runtime"] == "onnxruntime"
    for name in ("cad-sr.dcm", "cad-pr.dcm"):
        assert without_creation_times(site_dir / name) == without_creation_times(dev_dir / name), name
    for png in (dev_dir / "overlays").glob("*.png"):
        assert (site_dir / "overlays" / png.name).read_bytes() == png.read_bytes()


@pytest.mark.slow
@pytest.mark.req("SRS-MOD-001", "SRS-PRD-009")
def test_site_install_without_a_model_says_how_to_name_one(site_venv: Path, mass_phantom_dir: Path,
                                                           tmp_path: Path) -> None:
    empty = tmp_path / "no-model"
    empty.mkdir()
    run = _run([str(site_venv / "bin" / "cad"), "detect", str(mass_phantom_dir), "--out", str(tmp_path / "o")],
               env={**os.environ, "CAD_MODEL_DIR": str(empty)})
    assert run.returncode == 3, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert str(empty) in line and "--model" in line and "CAD_MODEL_DIR" in line and "Traceback" not in run.stderr


@pytest.mark.slow
@pytest.mark.req("SRS-RT-009")
def test_site_install_refuses_the_pytorch_side_naming_its_distribution(site_venv: Path, mass_phantom_dir: Path,
                                                               tmp_path: Path) -> None:
    cad = str(site_venv / "bin" / "cad")
    torch_run = _run([cad, "detect", str(mass_phantom_dir), "--out", str(tmp_path / "t"), "--model", str(MODEL),
                      "--runtime", "torch"])
    assert torch_run.returncode == 2
    assert "mammo-cad-torch" in torch_run.stderr and "Traceback" not in torch_run.stderr
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").rglob("findings.json"))
    export = _run([cad, "export", "--out", str(tmp_path / "e"), "--model", str(MODEL)])
    assert export.returncode == 2 and "mammo-cad-torch" in export.stderr and "Traceback" not in export.stderr


@pytest.mark.slow
@pytest.mark.req("SRS-RT-009", "SRS-BAT-001")
def test_site_install_runs_batch_locally_without_ray(site_venv: Path, mass_phantom_dir: Path, tmp_path: Path) -> None:
    """Ray is the batch extra: the local engine runs in the site install and writes what the
    development install's `cad detect` writes."""
    probe = _run([str(site_venv / "bin" / "python"), "-c", "import ray"])
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, "ray is in the site install"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1767225600"}
    batch = _run([str(site_venv / "bin" / "cad"), "batch", str(mass_phantom_dir), "--out", str(tmp_path / "batch"),
                  "--model", str(MODEL)], env=env)
    assert batch.returncode == 0, batch.stderr
    detect = _run([sys.executable, "-c", "from cad.cli import main; main()", "detect", str(mass_phantom_dir),
                   "--out", str(tmp_path / "detect"), "--model", str(MODEL), "--no-overlays"], env=env)
    assert detect.returncode == 0, detect.stderr
    (study,) = [p for p in (tmp_path / "detect").iterdir() if p.is_dir()]
    written = sorted(p.name for p in study.iterdir())
    assert "findings.json" in written and "cad-sr.dcm" in written
    for name in written:
        assert (tmp_path / "batch" / study.name / name).read_bytes() == (study / name).read_bytes(), name
