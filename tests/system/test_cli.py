"""The `cad` command line, run as a user runs it (SRS-PRD-001, SRS-ING-008)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CAD = [sys.executable, "-m", "cad.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAD, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.req("SRS-PRD-001")
def test_help_lists_subcommands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for verb in ("phantom", "inspect"):
        assert verb in result.stdout
    assert "Generate synthetic dual-view screening exams" in result.stdout


@pytest.mark.req("SRS-PRD-001")
def test_missing_input_is_usage_error(tmp_path: Path) -> None:
    result = run("inspect", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope'}: no such file or folder"


@pytest.mark.req("SRS-PRD-001", "SRS-ING-008")
def test_phantom_then_inspect_with_a_bad_file(tmp_path: Path) -> None:
    out = tmp_path / "exam"
    made = run("phantom", "--out", str(out), "--exams", "1", "--seed", "3", "--spacing", "0.3")
    assert made.returncode == 0, made.stderr
    assert "images/s" in made.stdout and (out / "truth.json").exists()
    bad = out / "exam00000" / "broken.dcm"
    bad.write_bytes(b"not dicom at all")
    result = run("inspect", str(out), "--truth", str(out / "truth.json"), "--out", str(tmp_path / "ov"))
    assert result.returncode == 0
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert error_lines == [f"error: {bad}: not a DICOM file (no DICM preamble or header)"]
    assert len(list((tmp_path / "ov").rglob("*.png"))) == 4


@pytest.mark.req("SRS-PRD-001", "SRS-ING-008")
def test_nothing_analysable_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"junk")
    result = run("inspect", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == "error: nothing could be analysed"
