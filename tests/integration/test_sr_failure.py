"""A study whose SR cannot be written is never reported done (SRS-SVC-011)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cad.job
from cad.cli import EXIT_OUTPUTS_INCOMPLETE, app
from cad.detect.locked import load_locked_model
from cad.detect.runtime import make_runtime
from cad.service.queue import FAILED, RetryPolicy
from cad.service.service import Service, ServiceConfig


@pytest.fixture
def failing_sr(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("SR content item rejected (injected)")

    monkeypatch.setattr(cad.job, "write_dicom_outputs", refuse)


@pytest.mark.req("SRS-SVC-011")
def test_detect_exits_4_when_a_study_has_no_sr(failing_sr: None, mass_phantom_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["detect", str(mass_phantom_dir), "--out", str(tmp_path / "out"),
                                      "--no-overlays"])
    assert result.exit_code == EXIT_OUTPUTS_INCOMPLETE, result.output
    assert len(list((tmp_path / "out").glob("*/findings.json"))) == 1  # the findings are not lost
    assert not list((tmp_path / "out").glob("*/cad-sr.dcm"))
    assert "DICOM outputs not written: SR content item rejected (injected)" in result.output


@pytest.mark.req("SRS-SVC-011")
def test_service_retries_then_fails_a_job_without_sr(failing_sr: None, mass_phantom_dir: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    shutil.copytree(mass_phantom_dir / "exam00000", inbox / "exam-1")
    model = load_locked_model()
    config = ServiceConfig(state=tmp_path / "state", watch=inbox, quiet_seconds=0.2,
                           retry=RetryPolicy(max_attempts=2, base_seconds=0.1, max_seconds=0.1))
    service = Service(config, model, make_runtime(model, "onnxruntime"))
    service.run(once=True)
    (job,) = service.queue.jobs()
    assert job.state == FAILED and job.attempts == 2
    assert "SR content item rejected (injected)" in (job.reason or "")
    assert "gave up after 2 attempts" in (job.reason or "")
