"""One error hierarchy for the device, each kind with its exit code (SRS-PRD-001): the command
line maps an error by its class, never by catching a built-in exception."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cad.errors import CadError, EnvironmentProblem, ExitCode, ModelError, SourceUnreachable, UsageError


@pytest.mark.req("SRS-PRD-001")
def test_every_error_the_device_reports_is_a_cad_error_with_its_documented_exit_code() -> None:
    from cad.detect.locked import ModelIntegrityError
    from cad.detect.manifest import ManifestError
    from cad.detect.runtime import RuntimeUnavailableError
    from cad.io.dicomweb import PacsError
    from cad.io.errors import IngestError
    from cad.job import OutputsNotWritten
    from cad.report.sr.reader import SRReadError
    from cad.result.model import ResultError
    from cad.service.outcomes import OutcomesError
    from cad.service.service import ListenerError
    from cad.service.store import StateLockedError
    from cad_torch.export import ExportError

    expected = {ModelIntegrityError: ExitCode.MODEL, ManifestError: ExitCode.MODEL,
                RuntimeUnavailableError: ExitCode.USAGE, SRReadError: ExitCode.USAGE, ResultError: ExitCode.USAGE,
                OutcomesError: ExitCode.USAGE, StateLockedError: ExitCode.USAGE, OutputsNotWritten: ExitCode.ENVIRONMENT,
                ListenerError: ExitCode.ENVIRONMENT, PacsError: ExitCode.NOTHING_ANALYSED}
    for kind, code in expected.items():
        assert issubclass(kind, CadError) and kind.exit_code is code, kind.__name__
    assert issubclass(IngestError, CadError) and issubclass(ExportError, CadError)
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5, 6]
    # the kinds that were ValueError or RuntimeError keep that base for callers that catch it
    assert issubclass(UsageError, ValueError) and issubclass(ManifestError, ValueError)
    assert issubclass(ModelIntegrityError, RuntimeError) and issubclass(PacsError, RuntimeError)
    assert (ModelError.exit_code, EnvironmentProblem.exit_code, SourceUnreachable.exit_code) == (3, 6, 1)


@pytest.mark.req("SRS-PRD-001")
def test_the_command_line_maps_an_error_by_its_class(tmp_path: Path) -> None:
    """A usage problem found deep in a verb (a manifest CSV without its column, read by batch
    discovery) is one line and exit 2; a model that is not one is exit 3."""
    manifest = tmp_path / "archive.csv"
    manifest.write_text("file\nx.dcm\n")
    ran = subprocess.run([sys.executable, "-m", "cad.cli", "batch", str(manifest), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert ran.stderr.strip().splitlines()[-1] == f"error: {manifest}: a manifest needs a 'path' column"
    empty = tmp_path / "model"
    empty.mkdir()
    ran = subprocess.run([sys.executable, "-m", "cad.cli", "detect", str(tmp_path), "--out", str(tmp_path / "o"),
                          "--model", str(empty)], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 3 and ran.stderr.strip().startswith(f"error: {empty}: no locked model here")
