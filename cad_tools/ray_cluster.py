"""A real Ray cluster on this machine for tests and measurements: `ray start --head` on loopback
with token authentication (Ray 2.59+), stopped on exit; and the process IDs of the batch
actors, for killing one mid-run."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cad_tools.orthanc import free_port

RAY = str(Path(sys.executable).with_name("ray"))


@contextmanager
def local_ray_cluster(cpus: int = 2) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head node with ``cpus`` worker CPUs: its address and the environment a driver needs
    (the cluster's token). Its temp folder is short: Unix socket paths are limited to 107 bytes."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    started = subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                              "--num-cpus", str(cpus), "--include-dashboard", "false", "--disable-usage-stats",
                              "--temp-dir", str(temp)], capture_output=True, text=True, env=env, timeout=180)
    if started.returncode != 0:
        shutil.rmtree(temp, ignore_errors=True)
        raise RuntimeError(f"ray start failed: {started.stderr[-2000:]}")
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def analyst_pids() -> list[int]:
    """PIDs of the batch actors' worker processes (`ray::_Analyst`)."""
    found = subprocess.run(["pgrep", "-f", "ray::_Analyst"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]
