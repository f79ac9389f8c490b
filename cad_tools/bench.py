"""`cad bench INPUT --json OUT.json`: how fast the CAD runs on this machine, measured in one run.

A benchmark, not a test: it reports what it measures and never passes or fails. For every
runtime that can run here it times warm, in-process, end-to-end exams: DICOM files in (decoded
from the page cache), findings.json, the Mammography CAD SR and the presentation state(s)
written, i.e. exactly :func:`cad.job.run_studies` without overlays. Runtimes take turns on every
repeat, so machine load affects them alike and their ratios are fair on a shared machine.

With ``--baseline-model`` the same runtimes also run another locked model (for example the
previous release) in the same turns, and the ratio of mean exam times is reported.

Also measured: model-stage throughput against batch size (views of one shape), the cold start
of ``cad detect`` on one exam in a fresh process, how exam time grows with image size (other
exam folders given with ``--size-input``), and the process's peak resident memory.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch

from cad.detect.inputs import prepare_view
from cad.detect.locked import LockedModel
from cad.detect.release import DEVELOPMENT_VARIABLE
from cad.detect.runtime import Runtime, RuntimeName, RuntimeUnavailableError, make_runtime
from cad.io import load
from cad.io.loader import iter_input_files
from cad.job import run_studies
from cad.stages import Stage, StageClock
from traceability.soup import installed_bytes, runtime_closure

#: batch sizes of the model-stage throughput scan
BATCH_SIZES = (1, 2, 4, 8)


def exam_files(inputs: Iterable[Path]) -> list[tuple[Path, ...]]:
    """The DICOM files under ``inputs`` grouped by StudyInstanceUID (headers only, no pixels)."""
    groups: dict[str, list[Path]] = {}
    for path in iter_input_files(inputs):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            uid = str(header.StudyInstanceUID)
        except Exception:  # noqa: BLE001 - not DICOM, or no study: not an exam to time
            continue
        groups.setdefault(uid, []).append(path)
    return [tuple(groups[uid]) for uid in sorted(groups)]


def time_exam(paths: tuple[Path, ...], model: LockedModel, runtime: Runtime, out: Path) -> tuple[float, StageClock, int]:
    """Wall seconds of one exam end to end, its stage times and the number of views analysed."""
    clock = StageClock()
    start = time.perf_counter()
    with clock.stage(Stage.DECODE):
        studies = load(paths).studies
    outcomes = run_studies(studies, model, runtime, out, overlays=False, clock=clock)
    return time.perf_counter() - start, clock, sum(o.images_analysed for o in outcomes)


def _summary(runs: list[tuple[float, StageClock, int]]) -> dict[str, Any]:
    latencies = np.array([r[0] for r in runs])
    views = sum(r[2] for r in runs)
    stages = {stage.value: float(np.mean([r[1].seconds[stage] for r in runs])) for stage in Stage}
    model = sum(r[1].seconds[Stage.MODEL] for r in runs)
    mean = float(latencies.mean())
    return {
        "model_s_per_view": round(model / max(views, 1), 4),
        "exam_latency_p50_s": round(float(np.percentile(latencies, 50)), 4),
        "exam_latency_p95_s": round(float(np.percentile(latencies, 95)), 4),
        "exam_latency_mean_s": round(mean, 4),
        "exams_per_min": round(60.0 / mean, 2),
        "stages_s": {k: round(v, 4) for k, v in stages.items()},
        "non_model_fraction": round(1.0 - stages[Stage.MODEL.value] / mean, 3),
        "exams_timed": len(runs),
        "views_per_exam": round(views / len(runs), 2),
    }


def bench_runtimes(
    exams: list[tuple[Path, ...]], model: LockedModel, runtimes: dict[str, Runtime], repeats: int, out: Path
) -> dict[str, Any]:
    """Per runtime: model seconds per view, exam latency p50/p95, exams per minute, stage means."""
    return bench_engines(exams, {name: (model, runtime) for name, runtime in runtimes.items()}, repeats, out)


def bench_engines(
    exams: list[tuple[Path, ...]], engines: dict[str, tuple[LockedModel, Runtime]], repeats: int, out: Path
) -> dict[str, Any]:
    """:func:`bench_runtimes` for any (model, runtime) pairs: they take turns on every repeat, so
    their ratios are taken in one run under the same machine load."""
    for name, (model, runtime) in engines.items():  # warm-up: first-call allocations, lazy imports
        time_exam(exams[0], model, runtime, out / "warmup" / name)
    runs: dict[str, list[tuple[float, StageClock, int]]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, (model, runtime) in engines.items():
            for k, paths in enumerate(exams):
                runs[name].append(time_exam(paths, model, runtime, out / name / str(k)))
    return {name: _summary(r) for name, r in runs.items()}


def bench_batches(model: LockedModel, paths: tuple[Path, ...], names: list[str], repeats: int) -> dict[str, Any]:
    """Model-stage views per second at each batch size, with copies of one prepared view (only
    views of equal shape share a batch)."""
    view = prepare_view(load(paths).images[0], model.config)
    result: dict[str, Any] = {"view_shape": list(view.array.shape), "views_per_s": {}}
    for name in names:
        runtime = make_runtime(model, name, max_batch=max(BATCH_SIZES), evaluation=True)
        runtime.detect([view])
        rates = {}
        for size in BATCH_SIZES:
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                runtime.detect([view] * size)
                samples.append(time.perf_counter() - start)
            rates[str(size)] = round(size / float(np.median(samples)), 2)
        result["views_per_s"][name] = rates
    return result


#: a fresh ``cad detect`` that writes its own peak resident memory (KiB) to the file given first;
#: VmHWM, not getrusage: Linux carries ru_maxrss across exec from the forking (benchmark) process
_CHILD = ("import atexit, re, sys\n"
          "report = sys.argv.pop(1)\n"
          "def peak():\n"
          "    status = open('/proc/self/status').read()\n"
          "    open(report, 'w').write(re.search(r'VmHWM:\\s*(\\d+)', status).group(1))\n"
          "atexit.register(peak)\n"
          "from cad.cli import main\n"
          "main()\n")


def cold_start(paths: tuple[Path, ...], model_dir: Path | None, runtime: str = RuntimeName.ONNXRUNTIME.value,
               python: str = sys.executable) -> dict[str, Any]:
    """``cad detect --runtime RUNTIME`` on one exam in a fresh process of ``python`` (another venv,
    for example a site install, when given): total wall time, the part the process itself reports
    as analysis (the rest is start-up: imports, model verification, runtime session), and the
    process's peak resident memory."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rss"
        command = [python, "-c", _CHILD, str(report), "detect", *map(str, paths),
                   "--out", str(Path(tmp) / "out"), "--no-overlays", "--runtime", runtime]
        env = None
        if model_dir is not None:  # a candidate or baseline model is measured before any release
            command += ["--model", str(model_dir)]
            env = {**os.environ, DEVELOPMENT_VARIABLE: "1"}
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        total = time.perf_counter() - start
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1], "python": python}
        run = json.loads((Path(tmp) / "out" / "detect_run.json").read_text())
        peak_mb = int(report.read_text()) / 1024 if report.is_file() else None
    analysis = float(run["mean_wall_seconds_per_study"])
    return {"total_s": round(total, 3), "analysis_s": round(analysis, 3), "startup_s": round(total - analysis, 3),
            "runtime": run["runtime"], "peak_rss_mb": round(peak_mb, 1) if peak_mb else None, "python": python}


#: distributions a runtime needs beyond the site install (the default install)
RUNTIME_PACKAGES = {RuntimeName.TORCH.value: ("torch", "torchvision"),
                    RuntimeName.TENSORRT.value: ("torch", "tensorrt-cu13")}


def installed_size(runtime: str) -> dict[str, Any]:
    """Distributions and megabytes on disk that running ``runtime`` needs: the site install's
    dependency closure, plus the runtime's own packages (as installed here)."""
    names, _, _ = runtime_closure()
    for extra in RUNTIME_PACKAGES.get(runtime, ()):
        names = names | {extra} | runtime_closure(extra)[0]
    return {"packages": len(names), "mb": round(installed_bytes(names) / 1e6, 1)}


def _pixels(paths: tuple[Path, ...]) -> int:
    """Mean pixels per image of an exam, from the headers (no second decode)."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["Rows", "Columns"]) for p in paths]
    return int(np.mean([int(h.Rows) * int(h.Columns) for h in headers]))


def bench_sizes(
    folders: list[Path], model: LockedModel, runtime: Runtime, repeats: int, out: Path, max_exams: int
) -> list[dict[str, Any]]:
    """Exam time against original image size, one entry per exam folder."""
    entries = []
    for folder in folders:
        exams = exam_files([folder])[:max_exams]
        if not exams:
            entries.append({"input": str(folder), "error": "no DICOM exam found"})
            continue
        timed = bench_runtimes(exams, model, {runtime.name: runtime}, repeats, out / folder.name)[runtime.name]
        entries.append({"input": str(folder), "image_pixels_mean": _pixels(exams[0]), **timed})
    return entries


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def run_bench(
    inputs: list[Path], model: LockedModel, runtimes: list[str], repeats: int = 3, max_exams: int = 4,
    size_inputs: list[Path] | None = None, with_cold_start: bool = True, baseline: LockedModel | None = None,
    site_python: str | None = None,
) -> dict[str, Any]:
    """Every measurement of `cad bench`, as the JSON document it writes."""
    exams = exam_files(inputs)[:max_exams]
    if not exams:
        raise ValueError(f"{', '.join(map(str, inputs))}: no DICOM exam found")
    engines: dict[str, Runtime] = {}
    unavailable: dict[str, str] = {}
    for name in runtimes:
        try:
            engines[name] = make_runtime(model, name, evaluation=True)
        except RuntimeUnavailableError as exc:
            unavailable[name] = str(exc)
    if not engines:
        raise RuntimeUnavailableError("none of the runtimes asked for can run here")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        pairs = {name: (model, runtime) for name, runtime in engines.items()}
        if baseline is not None:  # the same runtimes on the baseline model, in the same turns
            pairs.update({f"baseline/{name}": (baseline, make_runtime(baseline, name, evaluation=True)) for name in engines})
        both = bench_engines(exams, pairs, repeats, out)
        timed = {name: both[name] for name in engines}
        result: dict[str, Any] = {"runtimes": {**timed, **{n: {"available": False, "reason": r}
                                                          for n, r in unavailable.items()}}}
        if baseline is not None:
            result["baseline"] = {
                "model": baseline.name, "model_sha256": baseline.sha256,
                "runtimes": {name: both[f"baseline/{name}"] for name in engines},
                "exam_time_ratio": {name: round(timed[name]["exam_latency_mean_s"]
                                                / both[f"baseline/{name}"]["exam_latency_mean_s"], 3)
                                    for name in engines},
            }
        names = list(engines)
        if {RuntimeName.TORCH.value, RuntimeName.ONNXRUNTIME.value} <= set(timed):
            torch_s = timed[RuntimeName.TORCH.value]["model_s_per_view"]
            result["onnxruntime_vs_torch_model_speedup"] = round(
                torch_s / timed[RuntimeName.ONNXRUNTIME.value]["model_s_per_view"], 2)
        result["batch"] = bench_batches(model, exams[0], names, repeats)
        default = engines.get(RuntimeName.ONNXRUNTIME.value) or next(iter(engines.values()))
        if size_inputs:
            result["image_size"] = bench_sizes([inputs[0], *size_inputs], model, default, repeats, out, max_exams)
    for name in engines:
        result["runtimes"][name]["installed"] = installed_size(name)
    if with_cold_start:
        for name in engines:
            result["runtimes"][name]["cold_start"] = cold_start(exams[0], model.path, name)
        result["cold_start"] = result["runtimes"][default.name]["cold_start"]
        if site_python:
            result["cold_start_site_install"] = cold_start(exams[0], model.path, default.name, site_python)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["machine"] = machine()
    result["settings"] = {"inputs": [str(p) for p in inputs], "exams": len(exams), "repeats": repeats,
                          "model": model.name, "model_sha256": model.sha256,
                          "exam_latency": "warm, in-process: DICOM decode to findings.json + SR + GSPS written "
                                          "(no overlays), one exam at a time"}
    return result
