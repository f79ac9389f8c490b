"""A full disk (SRS-OUT-007): outputs are written whole or not at all, "no space left" is the
machine's condition with its own message and exit code, and the service keeps the job and
finishes it when space returns. The full disk is a real one: a small tmpfs mounted by the test
(as root, which `make test` runs as)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CAD = [sys.executable, "-m", "cad.cli"]


@pytest.fixture()
def small_disk() -> Iterator[Callable[[Path, str], Path]]:
    """Mounts a small tmpfs (``size``, e.g. "600k") at a folder; every mount is undone after the test."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (make test runs as root)")
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            pytest.skip(f"this machine does not let the test mount a tmpfs: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False, timeout=30)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.mark.req("SRS-OUT-007")
def test_detect_on_a_full_disk_stops_with_exit_6_and_leaves_no_partial_study(
        small_disk: Callable[[Path, str], Path], mass_phantom_dir: Path, tmp_path: Path) -> None:
    disk = small_disk(tmp_path / "small", "600k")  # room for findings.json, not for the SR and overlays
    out = disk / "out"
    ran = subprocess.run([*CAD, "detect", str(mass_phantom_dir), "--out", str(out)], capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 6, ran.stderr
    (line,) = ran.stderr.strip().splitlines()
    assert "no space left on device" in line and "Traceback" not in ran.stderr and line.startswith(f"error: {out}/")
    assert not any(p.is_dir() and not p.name.startswith(".") for p in out.iterdir()), "no study folder appeared"
    assert not [p for p in _files(disk) if p.stat().st_size == 0], "no empty file left behind"


@pytest.mark.slow
@pytest.mark.req("SRS-OUT-007", "SRS-BAT-001")
def test_batch_on_a_full_disk_stops_resumably_with_exit_6(small_disk: Callable[[Path, str], Path], phantom_dir: Path,
                                                          tmp_path: Path) -> None:
    out = small_disk(tmp_path / "small", "1m") / "batch"
    ran = subprocess.run([*CAD, "batch", str(phantom_dir), "--out", str(out), "--overlays"], capture_output=True,
                         text=True, timeout=600)
    assert ran.returncode == 6, ran.stderr
    assert "no space left on device" in ran.stderr and "Traceback" not in ran.stderr
    report = json.loads((out / "batch-report.json").read_text())
    assert report["stopped"] == "outputs not written: no space left on device"
    for study in (p for p in out.iterdir() if p.is_dir() and p.name.startswith("2.25.")):
        assert {"findings.json", "cad-sr.dcm", "batch-record.json"} <= {p.name for p in study.iterdir()}
    assert not [p for p in _files(out) if p.stat().st_size == 0 and p.suffix in (".json", ".dcm", ".png")]


@pytest.mark.slow
@pytest.mark.req("SRS-OUT-007", "SRS-SVC-012")
def test_the_service_keeps_the_job_until_space_returns(small_disk: Callable[[Path, str], Path], mass_phantom_dir: Path,
                                                       tmp_path: Path, until: Callable[..., object]) -> None:
    """The watched study's results folder is a full disk: the job waits (not failed, no attempt
    used up), /ready says outputs_writable false, then space is freed and the job is done."""
    watched = tmp_path / "inbox"
    shutil.copytree(mass_phantom_dir / "exam00000", watched / "exam")
    results = small_disk(watched / "exam" / "cad-results", "4m")  # where the service writes the study's results
    filler = results / ".filler"
    filler.write_bytes(b"\0" * max(0, shutil.disk_usage(results).free - 40_000))
    state = tmp_path / "state"
    token = tmp_path / "token"
    token.write_text("a-token-of-thirty-two-characters\n")
    from cad_tools.orthanc import free_port

    port = free_port()
    service = subprocess.Popen([*CAD, "-v", "serve", "--state", str(state), "--watch", str(watched), "--quiet-seconds",
                                "0", "--poll-seconds", "0.3", "--retry-seconds", "0.5", "--overlays",
                                "--api", f"127.0.0.1:{port}", "--token-file", str(token)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import requests

        def job() -> dict[str, object] | None:
            try:
                db = sqlite3.connect(state / "cad-service.sqlite")
                db.row_factory = sqlite3.Row
                rows = [dict(r) for r in db.execute("SELECT * FROM jobs")]
            except sqlite3.OperationalError:
                return None
            return rows[0] if rows else None

        def waiting() -> bool:
            found = job()
            ready = requests.get(f"http://127.0.0.1:{port}/ready", timeout=5)
            return bool(found and found["state"] == "pending" and "no space left" in str(found["reason"])
                        and ready.status_code == 503 and ready.json()["checks"]["outputs_writable"] is False)

        until(waiting, 240)
        assert {p.name for p in results.iterdir()} == {".filler"}, "nothing of the study left behind"
        assert (job() or {})["attempts"] == 0, "a full disk uses up no attempt"
        filler.unlink()  # space returns

        def done() -> bool:
            found = job()
            return bool(found and found["state"] == "done")

        until(done, 240)
        (study,) = [p for p in results.iterdir() if not p.name.startswith(".")]
        assert {"findings.json", "cad-sr.dcm", "cad-pr.dcm", "overlays"} <= {p.name for p in study.iterdir()}
        assert not [p for p in _files(study) if p.stat().st_size == 0]
        until(lambda: requests.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200, 60)
    finally:
        service.terminate()
        _, log = service.communicate(timeout=60)
    assert "outputs cannot be stored: no space left on device" in log and "Traceback" not in log
    assert "internal error" not in log
