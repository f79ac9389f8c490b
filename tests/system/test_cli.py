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
    assert result.returncode == 5  # the rest inspected; one file was not
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert error_lines == [f"not analysed: {bad}: not a DICOM file (no DICM preamble or header)",
                           "incomplete: 1 file not analysed (listed above)"]
    assert len(list((tmp_path / "ov").rglob("*.png"))) == 4


@pytest.mark.req("SRS-PRD-001", "SRS-ING-008")
def test_nothing_analysable_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "x.dcm"
    bad.write_bytes(b"junk")
    result = run("inspect", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == "error: nothing could be analysed"


#: one usage error per verb, and the one line that must name it (no traceback, exit 2)
USAGE_ERRORS = {
    "inspect": (["inspect", "{tmp}/absent"], "error: {tmp}/absent: no such file or folder"),
    "detect": (["detect", "{tmp}/absent", "--out", "{tmp}/out"], "error: {tmp}/absent: no such file or folder"),
    "export": (["export", "--out", "{tmp}/out", "--format", "tflite"], "error: --format tflite: use onnx, onnx-int8 or tensorrt"),
    "serve": (["serve", "--state", "{tmp}/state", "--since", "2026"], "error: --since 2026: use YYYYMMDD"),
    "audit verify": (["audit", "verify", "--state", "{tmp}"], "error: {tmp}/cad-service.sqlite: no such file or folder"),
    "audit show": (["audit", "show", "--state", "{tmp}"], "error: {tmp}/cad-service.sqlite: no such file or folder"),
    "phantom": (["phantom", "--out", "{tmp}/p", "--exams", "0"], None),
    "train": (["train", "--config", "{tmp}/absent.yaml"], "error: {tmp}/absent.yaml: no such training config"),
    "bench": (["bench", "{tmp}", "--json", "{tmp}/b.json", "--runtimes", "cuda"],
              "error: --runtimes cuda: use a comma-separated subset of torch, onnxruntime, tensorrt"),
    "evaluate": (["evaluate", "--truth", "{tmp}/t.json", "--findings", "{tmp}", "--out", "{tmp}/e"],
                 "error: {tmp}/t.json: no such file or folder"),
    "reader-study": (["reader-study", "{tmp}/r.csv", "--fom", "auc", "--json", "{tmp}/r.json"],
                     "error: --fom auc: use wilcoxon or wafroc"),
    "trace": (["trace", "--out", "{tmp}/t", "--junit", "{tmp}/j.xml"], "error: {tmp}/j.xml: no such file or folder"),
}


@pytest.mark.req("SRS-PRD-001")
@pytest.mark.parametrize("verb", sorted(USAGE_ERRORS))
def test_every_verb_gives_one_line_and_exit_2_on_a_usage_error(verb: str, tmp_path: Path) -> None:
    args, line = USAGE_ERRORS[verb]
    result = run(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    if line is not None:  # typer's own range check words its message itself
        assert result.stderr.strip() == line.format(tmp=tmp_path)
    else:
        assert "--exams" in result.stderr


@pytest.mark.req("SRS-PRD-001")
def test_every_verb_has_help() -> None:
    listed = run("--help").stdout
    for verb in USAGE_ERRORS:
        assert verb.split()[0] in listed
        result = run(*verb.split(), "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, verb
