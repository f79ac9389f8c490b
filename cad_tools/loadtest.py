"""Bounded load test of `cad serve` against a real Orthanc on loopback (a measurement, not a test).

``python -m cad_tools.loadtest --studies 200 --out reports/loadtest`` generates phantom exams,
loads them all into a fresh Orthanc, runs ``cad serve --dicomweb ... --once`` as a separate
process and then checks and measures:

- every study analysed exactly once (one finished job and one analysis audit record each);
- every study holding exactly one CAD SR in the PACS, in that study, whose evidence is the
  study's MG images, and a presentation state;
- throughput (studies per minute over the service's run) and queue latency (enqueued to
  finished) and processing time per study, p50 / p95 / max.

Writes ``loadtest.json`` in the output folder.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cad_tools.bench import machine
from cad_tools.orthanc import Orthanc
from cad_tools.phantom.generate import PhantomConfig, generate

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.50"
PR_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"


def _percentiles(values: list[float]) -> dict[str, float]:
    array = np.array(values)
    return {"p50": round(float(np.percentile(array, 50)), 3), "p95": round(float(np.percentile(array, 95)), 3),
            "max": round(float(array.max()), 3), "mean": round(float(array.mean()), 3)}


def _upload(pacs: Orthanc, paths: list[Path], threads: int = 4) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: pacs.upload([p]), paths))
    return time.perf_counter() - start


def check_pacs(pacs: Orthanc, truth: dict[str, Any]) -> dict[str, Any]:
    """Per study: CAD SRs and presentation states the PACS holds, and whether the SR's
    evidence is exactly the study's MG images."""
    problems: list[str] = []
    srs = prs = 0
    for exam in truth["exams"]:
        uid = exam["study_instance_uid"]
        wanted = {image["sop_instance_uid"] for image in exam["images"]}
        study_srs, study_prs = pacs.instances(uid, SR_CLASS), len(pacs.instances(uid, PR_CLASS))
        srs += len(study_srs)
        prs += study_prs
        if len(study_srs) != 1:
            problems.append(f"{uid}: {len(study_srs)} CAD SRs")
            continue
        sr = study_srs[0]
        evidence = {ref.ReferencedSOPInstanceUID for item in sr.CurrentRequestedProcedureEvidenceSequence
                    for series in item.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
        if sr.StudyInstanceUID != uid or evidence != wanted:
            problems.append(f"{uid}: SR not linked to the study's images")
        if study_prs == 0:
            problems.append(f"{uid}: no presentation state")
    return {"srs": srs, "presentation_states": prs, "problems": problems}


def run(studies: int, seed: int, spacing: float, out: Path, workdir: Path, runtime: str) -> dict[str, Any]:
    exams = workdir / "exams"
    t0 = time.perf_counter()
    run_info = generate(exams, exams=studies, seed=seed, config=PhantomConfig(spacing_mm=spacing), workers=2)
    generated_s = time.perf_counter() - t0
    truth = run_info.truth
    paths = sorted(exams.glob("exam*/*.dcm"))
    with Orthanc(workdir / "orthanc") as pacs:
        upload_s = _upload(pacs, paths)
        state = workdir / "state"
        command = [sys.executable, "-m", "cad.cli", "serve", "--state", str(state), "--dicomweb", pacs.dicomweb,
                   "--once", "--poll-seconds", "5"] + (["--runtime", runtime] if runtime else [])
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        service_s = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"cad serve exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
        db = sqlite3.connect(state / "cad-service.sqlite")
        db.row_factory = sqlite3.Row
        jobs = [dict(r) for r in db.execute("SELECT * FROM jobs")]
        records = [json.loads(r["record"]) for r in db.execute("SELECT record FROM audit ORDER BY seq")]
        pacs_check = check_pacs(pacs, truth)
    analyses = [r for r in records if r.get("event") == "analysis"]
    expected = {e["study_instance_uid"] for e in truth["exams"]}
    first_enqueued = min(j["enqueued"] for j in jobs)
    last_finished = max(j["finished"] for j in jobs)
    result = {
        "studies": studies, "images": len(paths), "pixel_spacing_mm": spacing, "seed": seed,
        "exactly_once": {
            "jobs": len(jobs), "jobs_done": sum(j["state"] == "done" for j in jobs),
            "studies_with_one_job": sum(1 for uid in expected if sum(j["study_uid"] == uid for j in jobs) == 1),
            "analysis_audit_records": len(analyses),
            "distinct_studies_audited": len({r["study_uid"] for r in analyses}),
            "passed": len(jobs) == studies and len(analyses) == studies
            and {r["study_uid"] for r in analyses} == expected and all(j["state"] == "done" for j in jobs),
        },
        "pacs": pacs_check,
        "throughput": {
            "service_wall_s": round(service_s, 1),
            "studies_per_min_service": round(60 * studies / service_s, 2),
            "first_enqueue_to_last_finish_s": round(last_finished - first_enqueued, 1),
            "studies_per_min_queue": round(60 * studies / (last_finished - first_enqueued), 2),
        },
        "queue_latency_s": _percentiles([j["finished"] - j["enqueued"] for j in jobs]),
        "processing_s": _percentiles([j["finished"] - j["started"] for j in jobs]),
        "setup": {"generate_s": round(generated_s, 1), "upload_s": round(upload_s, 1),
                  "upload_images_per_s": round(len(paths) / upload_s, 1)},
        "command": " ".join(["python -m cad_tools.loadtest", f"--studies {studies}", f"--seed {seed}",
                             f"--spacing {spacing}"]),
        "machine": machine(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "loadtest.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--seed", type=int, default=31337)
    parser.add_argument("--spacing", type=float, default=0.2)
    parser.add_argument("--runtime", default="")
    parser.add_argument("--out", type=Path, default=Path("reports/loadtest"))
    parser.add_argument("--workdir", type=Path, default=None, help="keep exams, PACS and state here")
    args = parser.parse_args(argv)
    if args.workdir is not None:
        result = run(args.studies, args.seed, args.spacing, args.out, args.workdir, args.runtime)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.studies, args.seed, args.spacing, args.out, Path(tmp), args.runtime)
    print(json.dumps({k: result[k] for k in ("exactly_once", "throughput", "queue_latency_s", "processing_s")},
                     indent=2))
    if not result["exactly_once"]["passed"] or result["pacs"]["problems"]:
        print(f"problems: {result['pacs']['problems'][:10]}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
