"""`cad bench`: one run measures every runtime and reports the documented figures (SRS-RT-007)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cad.detect.runtime import tensorrt_available

STAGES = {"decode", "preprocess", "model", "rescore", "linking", "outputs"}


@pytest.mark.req("SRS-RT-007")
@pytest.mark.slow
def test_bench_reports_each_runtime_batches_cold_start_and_machine(mass_phantom_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "cad.cli", "bench", str(mass_phantom_dir), "--json", str(out), "--repeats", "1",
         "--exams", "1"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    bench = json.loads(out.read_text())
    timed = {name: row for name, row in bench["runtimes"].items() if row.get("available") is not False}
    assert {"torch", "onnxruntime"} <= set(timed)
    for name, row in timed.items():
        assert row["model_s_per_view"] > 0, name
        assert row["exam_latency_p95_s"] >= row["exam_latency_p50_s"] > 0
        assert set(row["stages_s"]) == STAGES
        assert all(v >= 0 for v in row["stages_s"].values())
        assert sum(row["stages_s"].values()) <= row["exam_latency_mean_s"] * 1.001
        assert row["exams_per_min"] == pytest.approx(60 / row["exam_latency_mean_s"], rel=0.01)
        assert row["views_per_exam"] == 4
    if not tensorrt_available():
        assert bench["runtimes"]["tensorrt"]["available"] is False
        assert "CUDA GPU" in bench["runtimes"]["tensorrt"]["reason"]
    assert bench["onnxruntime_vs_torch_model_speedup"] > 0
    for rates in bench["batch"]["views_per_s"].values():
        assert set(rates) == {"1", "2", "4", "8"} and all(r > 0 for r in rates.values())
    cold = bench["cold_start"]
    assert cold["total_s"] > cold["analysis_s"] > 0 and cold["runtime"] == "onnxruntime"
    for name, row in timed.items():  # each runtime's own cold start, memory and what it needs installed
        assert row["cold_start"]["runtime"] == name and row["cold_start"]["peak_rss_mb"] > 50
    # the PyTorch runtime needs torch on top of the site install; ONNX Runtime does not
    assert timed["torch"]["installed"]["mb"] > timed["onnxruntime"]["installed"]["mb"] > 10
    assert timed["torch"]["installed"]["packages"] > timed["onnxruntime"]["installed"]["packages"]
    assert bench["peak_rss_mb"] > 100
    assert bench["machine"]["logical_cpus"] >= 1 and bench["machine"]["torch"]


@pytest.mark.req("SRS-RT-007")
def test_bench_refuses_unknown_runtime(mass_phantom_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cad.cli", "bench", str(mass_phantom_dir), "--json", str(tmp_path / "b.json"),
         "--runtimes", "torch,openvino"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--runtimes torch,openvino" in result.stderr
    assert not (tmp_path / "b.json").exists()


@pytest.mark.req("SRS-RT-007")
@pytest.mark.slow
def test_bench_times_a_baseline_model_in_the_same_turns(mass_phantom_dir: Path, tmp_path: Path) -> None:
    from cad.detect.locked import default_model_dir, load_locked_model

    out = tmp_path / "bench.json"
    model = default_model_dir()
    result = subprocess.run(
        [sys.executable, "-m", "cad.cli", "bench", str(mass_phantom_dir), "--json", str(out), "--repeats", "1",
         "--exams", "1", "--runtimes", "onnxruntime", "--no-cold-start", "--baseline-model", str(model)],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    bench = json.loads(out.read_text())
    baseline = bench["baseline"]
    assert baseline["model_sha256"] == load_locked_model(model).sha256
    row, base = bench["runtimes"]["onnxruntime"], baseline["runtimes"]["onnxruntime"]
    assert baseline["exam_time_ratio"]["onnxruntime"] == pytest.approx(
        row["exam_latency_mean_s"] / base["exam_latency_mean_s"], abs=1e-3)
    assert "exam time against" in result.stdout
