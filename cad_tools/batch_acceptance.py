"""The archive acceptance run of `cad batch` on Ray: `python -m cad_tools.batch_acceptance --out DIR
[--exams 200] [--workers 2]`.

On a real local Ray cluster (`ray start --head` on loopback, one CPU per worker, token
authentication) it runs `cad batch --engine ray --overlays` over a phantom archive, kills one
actor process once some studies are done, kills the driver (and only the driver: the cluster
stays) further on, starts the same command again until it completes, then runs `cad detect` on
the same archive and compares every output file byte for byte (both with one
SOURCE_DATE_EPOCH). Writes DIR/acceptance.json: the kills, each study done exactly once, the
files compared and any that differ, wall times, throughput and the workers' peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cad_tools.phantom.generate import generate
from cad_tools.ray_cluster import analyst_pids, local_ray_cluster

CAD = [sys.executable, "-m", "cad.cli"]
EPOCH = "1780000000"


def _done(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("2.25.*") if p.is_dir()) if out.exists() else []


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


def _archive(root: Path, exams: int, seed: int) -> Path:
    archive = root / "archive"
    if not (archive / ".complete").exists():
        shutil.rmtree(archive, ignore_errors=True)
        generate(archive, exams=exams, seed=seed)
        (archive / "truth.json").unlink()
        (archive / ".complete").write_text(f"{exams} exams, seed {seed}\n")
    return archive


def run(out: Path, exams: int, workers: int, seed: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    archive = _archive(out, exams, seed)
    batch, detected = out / "batch", out / "detect"
    shutil.rmtree(batch, ignore_errors=True)
    shutil.rmtree(detected, ignore_errors=True)
    result: dict[str, Any] = {"exams": exams, "workers": workers, "seed": seed, "cpus": os.cpu_count()}
    with local_ray_cluster(cpus=workers) as (address, cluster_env):
        env = {**cluster_env, "SOURCE_DATE_EPOCH": EPOCH, "CAD_THREADS": "1"}
        command = [*CAD, "batch", str(archive), "--out", str(batch), "--engine", "ray", "--address", address,
                   "--workers", str(workers), "--overlays"]
        began = time.perf_counter()
        # first run: one actor killed after 10 % of the studies, the driver at 40 %
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                  start_new_session=True)
        actor_killed: dict[str, Any] | None = None
        driver_killed: dict[str, Any] | None = None
        while driver.poll() is None:
            done = len(_done(batch))
            if actor_killed is None and done >= exams // 10 and analyst_pids():
                pid = analyst_pids()[0]
                os.kill(pid, signal.SIGKILL)
                actor_killed = {"after_studies": done, "pid": pid, "at_s": round(time.perf_counter() - began, 1)}
            if actor_killed is not None and done >= (4 * exams) // 10:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
                driver_killed = {"after_studies": done, "at_s": round(time.perf_counter() - began, 1)}
                break
            time.sleep(0.2)
        first_wall = time.perf_counter() - began
        before = {p.name: json.loads((p / "batch-record.json").read_text())["worker_pid"] for p in _done(batch)}
        resumed_at = time.perf_counter()
        again = subprocess.run(command, capture_output=True, text=True, env=env)
        resumed_wall = time.perf_counter() - resumed_at
    report = json.loads((batch / "batch-report.json").read_text())
    redone = [uid for uid, pid in before.items()
              if json.loads((batch / uid / "batch-record.json").read_text())["worker_pid"] != pid]
    result["ray"] = {
        "actor_killed": actor_killed, "driver_killed": driver_killed,
        "first_run_wall_s": round(first_wall, 1), "resumed_run_wall_s": round(resumed_wall, 1),
        "resumed_exit_code": again.returncode, "ledger": report["ledger"],
        "resumed_done": report["studies_done_this_run"], "resumed_skipped": report["skipped_already_done"],
        "resumed_recovered": report["recovered_from_an_interrupted_run"],
        "done_before_the_driver_kill_redone": len(redone), "studies_per_hour_resumed_run": report["studies_per_hour"],
        "worker_seconds_per_study": report["worker_seconds_per_study"],
        "stage_seconds_per_study": report["stage_seconds_per_study"],
        "worker_peak_rss_mb": max(json.loads((p / "batch-record.json").read_text())["worker_peak_rss_mb"]
                                  for p in _done(batch)),
    }
    began = time.perf_counter()
    detect = subprocess.run([*CAD, "detect", str(archive), "--out", str(detected)], capture_output=True, text=True,
                            env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH})
    result["detect"] = {"exit_code": detect.returncode, "wall_s": round(time.perf_counter() - began, 1)}
    ours, theirs = {p.name for p in _done(batch)}, {p.name for p in _done(detected)}
    compared, differ, missing = 0, [], []
    for uid in sorted(theirs):
        for path in _files(detected / uid):
            compared += 1
            mine = batch / uid / path
            if not mine.is_file():
                missing.append(f"{uid}/{path}")
            elif mine.read_bytes() != (detected / uid / path).read_bytes():
                differ.append(f"{uid}/{path}")
    result["comparison"] = {
        "studies_batch": len(ours), "studies_detect": len(theirs), "same_studies": ours == theirs,
        "files_compared": compared, "files_differing": differ, "files_missing_in_batch": missing,
        "identical": ours == theirs and not differ and not missing,
    }
    (out / "acceptance.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--exams", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=18200)
    args = parser.parse_args(argv)
    result = run(args.out, args.exams, args.workers, args.seed)
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["comparison"]["identical"] and result["ray"]["resumed_exit_code"] == 0 else 1)


if __name__ == "__main__":
    main()
