"""The release runs only the models it was verified with (SRS-MOD-006, RC-002): an intact model
with other weights, or the released weights with an edited operating point, is refused before
an image is read; the development mode runs it, warns and marks every result unreleased."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cad.detect.locked import DEFAULT_MODEL_DIR, load_locked_model
from cad.detect.release import DEVELOPMENT_VARIABLE, RELEASED
from cad.report.sr.reader import read_mammography_cad_sr

CAD = [sys.executable, "-m", "cad.cli"]


def _detect(exam: Path, out: Path, model: Path | None = None, development: bool = False
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != DEVELOPMENT_VARIABLE}
    if development:
        env[DEVELOPMENT_VARIABLE] = "1"
    return subprocess.run([*CAD, "detect", str(exam), "--out", str(out), *(["--model", str(model)] if model else [])],
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.req("SRS-MOD-006")
def test_the_shipped_model_is_pinned_as_computed_from_its_files() -> None:
    weights = hashlib.sha256((DEFAULT_MODEL_DIR / "weights.safetensors").read_bytes()).hexdigest()
    settings = load_locked_model(DEFAULT_MODEL_DIR).settings_sha256
    assert (weights, settings) in {(r.weights_sha256, r.settings_sha256) for r in RELEASED}


@pytest.mark.slow
@pytest.mark.req("SRS-MOD-006")
def test_unreleased_models_are_refused_and_run_marked_only_in_development_mode(exam_files: list[Path],
                                                                                tmp_path: Path) -> None:
    exam = exam_files[0].parent
    edited = tmp_path / "edited"
    shutil.copytree(DEFAULT_MODEL_DIR, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["operating_point"]["threshold"] = round(manifest["operating_point"]["threshold"] * 1.5, 6)
    (edited / "manifest.json").write_text(json.dumps(manifest, indent=2))

    other = tmp_path / "other"
    shutil.copytree(DEFAULT_MODEL_DIR, other)
    tensors = load_file(other / "weights.safetensors")
    name = sorted(tensors)[-1]
    tensors[name] = (tensors[name] * np.float32(1.001)).astype(tensors[name].dtype)
    save_file(tensors, other / "weights.safetensors")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["weights"]["sha256"] = hashlib.sha256((other / "weights.safetensors").read_bytes()).hexdigest()
    (other / "manifest.json").write_text(json.dumps(manifest, indent=2))

    for model, differs in ((edited, "settings"), (other, "weights")):
        refused = _detect(exam, tmp_path / f"refused-{model.name}", model)
        assert refused.returncode == 3, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert str(model) in line and "not a model this release was verified with" in line and differs in line
        assert not (tmp_path / f"refused-{model.name}").exists()

    ran = _detect(exam, tmp_path / "development", edited, development=True)
    assert ran.returncode == 0, ran.stderr
    assert "not a released model" in ran.stderr and "not for clinical use" in ran.stderr
    (study,) = [p for p in (tmp_path / "development").iterdir() if p.is_dir()]
    assert json.loads((study / "findings.json").read_text())["algorithm"]["released"] is False
    assert read_mammography_cad_sr(study / "cad-sr.dcm").algorithm.released is False

    released = _detect(exam, tmp_path / "released")
    assert released.returncode == 0 and "not a released model" not in released.stderr
    (study,) = [p for p in (tmp_path / "released").iterdir() if p.is_dir()]
    assert "released" not in json.loads((study / "findings.json").read_text())["algorithm"]
    assert read_mammography_cad_sr(study / "cad-sr.dcm").algorithm.released is True
