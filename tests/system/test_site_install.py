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
import venv
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "phantom-retinanet-r18"
#: attributes set to the time of writing (the only allowed differences between two runs)
TORCH_SIDE = ("torch", "torchvision", "onnx", "onnxscript")


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=900, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def site_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the site install of this checkout (no extras)."""
    base = tmp_path_factory.mktemp("site")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "locked-dependencies.txt"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    for package in ("cad", "verification", "traceability"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = base / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    done = _run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "-c", str(ROOT / "locked-dependencies.txt"), str(source)])
    assert done.returncode == 0, f"site install failed: {done.stderr[-2000:]}"
    return env


@pytest.mark.slow
@pytest.mark.req("SRS-RT-009")
def test_site_install_runs_detect_without_torch(site_venv: Path, mass_phantom_dir: Path, tmp_path: Path,
                                                without_creation_times: Callable[[Path], pydicom.Dataset]) -> None:
    python = str(site_venv / "bin" / "python")
    for module in TORCH_SIDE:
        probe = _run([python, "-c", f"import {module}"])
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, f"{module} is in the site install"
    help_text = _run([str(site_venv / "bin" / "cad"), "--help"]).stdout
    assert "detect" in help_text and "serve" in help_text

    site = _run([str(site_venv / "bin" / "cad"), "detect", str(mass_phantom_dir), "--out", str(tmp_path / "site"),
                 "--model", str(MODEL)])
    assert site.returncode == 0, site.stderr
    development = _run([sys.executable, "-c", "from cad.cli import main; main()", "detect", str(mass_phantom_dir),
                        "--out", str(tmp_path / "dev"), "--model", str(MODEL)])
    assert development.returncode == 0, development.stderr
    (study,) = [p.name for p in (tmp_path / "dev").iterdir() if p.is_dir()]
    site_dir, dev_dir = tmp_path / "site" / study, tmp_path / "dev" / study
    assert (site_dir / "findings.json").read_bytes() == (dev_dir / "findings.json").read_bytes()
    findings = json.loads((site_dir / "findings.json").read_text())
    assert findings["findings"], "the masses are found"
    assert json.loads((tmp_path / "site" / "detect_run.json").read_text())["runtime"] == "onnxruntime"
    for name in ("cad-sr.dcm", "cad-pr.dcm"):
        assert without_creation_times(site_dir / name) == without_creation_times(dev_dir / name), name
    for png in (dev_dir / "overlays").glob("*.png"):
        assert (site_dir / "overlays" / png.name).read_bytes() == png.read_bytes()


@pytest.mark.slow
@pytest.mark.req("SRS-RT-009")
def test_site_install_refuses_the_pytorch_side_naming_the_extra(site_venv: Path, mass_phantom_dir: Path,
                                                               tmp_path: Path) -> None:
    cad = str(site_venv / "bin" / "cad")
    torch_run = _run([cad, "detect", str(mass_phantom_dir), "--out", str(tmp_path / "t"), "--model", str(MODEL),
                      "--runtime", "torch"])
    assert torch_run.returncode == 2
    assert "mammo-cad[dev]" in torch_run.stderr and "Traceback" not in torch_run.stderr
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").rglob("findings.json"))
    export = _run([cad, "export", "--out", str(tmp_path / "e"), "--model", str(MODEL)])
    assert export.returncode == 2 and "mammo-cad[dev]" in export.stderr and "Traceback" not in export.stderr


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
