"""Batch scaling on this machine: `python -m cad_tools.batch_scaling ARCHIVE --out DIR [--exams N]`.

Runs `cad batch` on the same studies three ways, each into a fresh folder: one worker with one
network thread, one worker with all cores' threads, and one worker per core with one thread
each; reports studies per hour, worker seconds and peak memory per worker, and the scaling
efficiency (throughput of N single-thread workers / N x one single-thread worker). Discovery
and start-up are included: what an archive run sees.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _manifest(archive: Path, exams: int, out: Path) -> Path:
    folders = sorted(p.resolve() for p in archive.iterdir() if p.is_dir())[:exams]
    manifest = out / "manifest.csv"
    manifest.write_text("path\n" + "".join(f"{f}\n" for folder in folders for f in sorted(folder.glob("*.dcm"))))
    return manifest


def run(archive: Path, out: Path, exams: int) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(archive, exams, out)
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {"cpus": cores, "exams": exams, "runs": {}}
    for name, workers, threads in (("1 worker x 1 thread", 1, 1), (f"1 worker x {cores} threads", 1, cores),
                                   (f"{cores} workers x 1 thread", cores, 1)):
        target = out / name.replace(" ", "-")
        shutil.rmtree(target, ignore_errors=True)
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cad.cli", "batch", str(manifest), "--out", str(target), "--workers",
                        str(workers)], env={**os.environ, "CAD_THREADS": str(threads)}, check=True,
                       capture_output=True)
        wall = time.perf_counter() - began
        report = json.loads((target / "batch-report.json").read_text())
        results["runs"][name] = {"workers": workers, "threads": threads, "wall_s": round(wall, 1),
                                 "studies_per_hour": round(3600 * exams / wall, 1),
                                 "worker_s_per_study": report["worker_seconds_per_study"],
                                 "worker_peak_rss_mb": report["worker_peak_rss_mb"]}
    runs = list(results["runs"].values())
    results["efficiency_n_workers"] = round(runs[2]["studies_per_hour"] / (cores * runs[0]["studies_per_hour"]), 3)
    results["n_workers_vs_threads"] = round(runs[2]["studies_per_hour"] / runs[1]["studies_per_hour"], 3)
    (out / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="a folder of exam folders (e.g. build/phantoms/drift-unshifted)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--exams", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.archive, args.out, args.exams), indent=2))


if __name__ == "__main__":
    main()
