"""`cad batch --engine ray` on a real local Ray cluster (`ray start --head` on loopback, two
worker CPUs, token authentication, started and stopped here): every output file equals `cad
detect`'s, a worker killed mid-run does not lose or repeat a study, and a driver killed mid-run
and started again completes each study once (SRS-BAT-002)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cad_tools.phantom.generate import generate
from cad_tools.ray_cluster import analyst_pids, local_ray_cluster

CAD = [sys.executable, "-m", "cad.cli"]
EPOCH = {"SOURCE_DATE_EPOCH": "1780000000"}  # byte-identical objects across runs (SRS-DCM-007)


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    with local_ray_cluster(cpus=2) as (address, env):
        yield address, {**env, **EPOCH}


def _studies(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("2.25.*") if p.is_dir()) if out.exists() else []


@pytest.mark.slow
@pytest.mark.req("SRS-BAT-002", "SRS-DCM-007")
def test_ray_cluster_run_equals_detect_and_survives_killed_workers_and_drivers(
        ray_cluster: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    address, env = ray_cluster
    archive = tmp_path / "archive"
    generate(archive, exams=6, seed=1820)
    (archive / "truth.json").unlink()
    out = tmp_path / "batch"
    command = [*CAD, "batch", str(archive), "--out", str(out), "--engine", "ray", "--address", address,
               "--workers", "2", "--overlays"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline, killed = time.monotonic() + 300, None
    while time.monotonic() < deadline and process.poll() is None:
        if _studies(out) and analyst_pids():  # a study is done and the actors are busy with the next ones
            killed = analyst_pids()[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.2)
    assert killed is not None, "no worker to kill"
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    report = json.loads((out / "batch-report.json").read_text())
    assert report["engine"] == "ray" and report["ledger"] == {"pending": 0, "done": 6, "failed": 0}
    assert report["studies_done_this_run"] == 6, "every study once, the killed worker's study again"

    detected = tmp_path / "detect"
    subprocess.run([*CAD, "detect", str(archive), "--out", str(detected)], capture_output=True, timeout=600,
                   env={**os.environ, **EPOCH})
    studies = [p.name for p in _studies(out)]
    assert studies == [p.name for p in _studies(detected)] and len(studies) == 6
    for uid in studies:
        theirs = sorted(p.relative_to(detected / uid) for p in (detected / uid).rglob("*") if p.is_file())
        assert any(p.suffix == ".png" for p in theirs) and any(p.name == "cad-sr.dcm" for p in theirs)
        for path in theirs:
            assert (out / uid / path).read_bytes() == (detected / uid / path).read_bytes(), path

    # the driver killed mid-run (its actors die with it); started again, it does what is missing
    resumed = tmp_path / "resumed"
    command[command.index(str(out))] = str(resumed)
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None and not _studies(resumed):
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    survived = {p.name: json.loads((p / "batch-record.json").read_text())["worker_pid"] for p in _studies(resumed)}
    assert 1 <= len(survived) < 6, "killed mid-run"
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((resumed / "batch-report.json").read_text())
    assert second["ledger"] == {"pending": 0, "done": 6, "failed": 0}
    assert second["studies_done_this_run"] + second["skipped_already_done"] + \
        second["recovered_from_an_interrupted_run"] == 6
    for uid, pid in survived.items():  # done before the kill: not done again
        assert json.loads((resumed / uid / "batch-record.json").read_text())["worker_pid"] == pid
    for uid in studies:
        assert (resumed / uid / "cad-sr.dcm").read_bytes() == (detected / uid / "cad-sr.dcm").read_bytes()
