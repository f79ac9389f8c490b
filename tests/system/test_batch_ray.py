"""`cad batch --engine ray` on a real local Ray cluster (`ray start --head` on loopback, two
worker CPUs, started and stopped here): outputs equal `cad detect`'s, and a worker killed
mid-run does not lose or repeat a study (SRS-BAT-002)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cad.tools.orthanc import free_port
from cad.tools.phantom.generate import generate

CAD = [sys.executable, "-m", "cad.cli"]
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head node on loopback with 2 CPUs and token authentication: its address and the
    environment a driver needs (the token). Its temp folder is short: Unix socket paths are
    limited to 107 bytes."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    started = subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                              "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
                              "--temp-dir", str(temp)], capture_output=True, text=True, env=env, timeout=180)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _analysts() -> list[int]:
    """PIDs of the batch actors' worker processes."""
    found = subprocess.run(["pgrep", "-f", "ray::_Analyst"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


@pytest.mark.slow
@pytest.mark.req("SRS-BAT-002")
def test_ray_cluster_run_equals_detect_and_survives_a_killed_worker(ray_cluster: tuple[str, dict[str, str]],
                                                                   tmp_path: Path) -> None:
    address, env = ray_cluster
    archive = tmp_path / "archive"
    generate(archive, exams=6, seed=1820)
    (archive / "truth.json").unlink()
    out = tmp_path / "batch"
    process = subprocess.Popen([*CAD, "batch", str(archive), "--out", str(out), "--engine", "ray", "--address",
                                address, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    deadline, killed = time.monotonic() + 300, None
    while time.monotonic() < deadline and process.poll() is None:
        done = [p for p in out.glob("2.25.*") if p.is_dir()] if out.exists() else []
        if done and _analysts():  # a study is done and the actors are busy with the next ones
            killed = _analysts()[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.2)
    assert killed is not None, "no worker to kill"
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    report = json.loads((out / "batch-report.json").read_text())
    assert report["engine"] == "ray" and report["ledger"] == {"pending": 0, "done": 6, "failed": 0}
    assert report["studies_done_this_run"] == 6, "every study once, the killed worker's study again"

    detected = tmp_path / "detect"
    subprocess.run([*CAD, "detect", str(archive), "--out", str(detected), "--no-overlays"], capture_output=True,
                   timeout=600)
    studies = sorted(p.name for p in out.glob("2.25.*"))
    assert studies == sorted(p.name for p in detected.glob("2.25.*")) and len(studies) == 6
    for uid in studies:
        assert (out / uid / "findings.json").read_bytes() == (detected / uid / "findings.json").read_bytes()
    shutil.rmtree(detected)
