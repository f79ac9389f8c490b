"""The service's readiness reflects the installed model, not a constant (SRS-SVC-008)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cad.detect.locked import WEIGHTS_FILE, default_model_dir, load_locked_model
from cad.detect.runtime import make_runtime
from cad.service.service import Service, ServiceConfig


@pytest.mark.req("SRS-SVC-008")
def test_ready_reports_whether_the_installed_weights_still_verify(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(default_model_dir(), folder)
    model = load_locked_model(folder)
    (tmp_path / "in").mkdir()
    service = Service(ServiceConfig(state=tmp_path / "state", watch=tmp_path / "in"), model,
                      make_runtime(model, "torch"))
    checks = service.readiness()
    assert checks["model_verified"] is True and checks["database"] is True
    weights = folder / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the file on disk no longer is the model the service runs
    weights.write_bytes(bytes(data))
    assert service.readiness()["model_verified"] is False
    weights.unlink()
    assert service.readiness()["model_verified"] is False
