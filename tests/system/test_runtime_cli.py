"""`cad export` and `cad detect --runtime` end to end (SRS-RT-*)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest

from cad.detect.locked import DEFAULT_MODEL_DIR
from cad.detect.runtime import tensorrt_available

CAD = [sys.executable, "-m", "cad.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAD, *args], capture_output=True, text=True, timeout=900)


def _findings(folder: Path) -> dict[str, Any]:
    (path,) = folder.rglob("findings.json")
    return json.loads(path.read_text())


@pytest.mark.req("SRS-RT-001")
def test_export_writes_onnx_and_manifest(tmp_path: Path) -> None:
    result = run("export", "--format", "onnx", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    entry = json.loads((tmp_path / "onnx_manifest.json").read_text())
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert entry["source_weights_sha256"] == manifest["weights"]["sha256"]
    assert entry["bytes"] == (tmp_path / "detector.onnx").stat().st_size
    onnx.checker.check_model(onnx.load(str(tmp_path / "detector.onnx")))


@pytest.mark.req("SRS-RT-001")
def test_export_refuses_unknown_format_and_unverified_model(tmp_path: Path) -> None:
    bad = run("export", "--format", "tflite", "--out", str(tmp_path / "a"))
    assert bad.returncode == 2 and "use onnx, onnx-int8 or tensorrt" in bad.stderr
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    raw = bytearray((model / "weights.safetensors").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (model / "weights.safetensors").write_bytes(bytes(raw))
    refused = run("export", "--format", "onnx", "--out", str(tmp_path / "b"), "--model", str(model))
    assert refused.returncode == 3 and "weights do not match the manifest" in refused.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.req("SRS-RT-003", "SRS-RT-004")
def test_both_runtimes_give_the_same_findings(mass_phantom_dir: Path, tmp_path: Path) -> None:
    outputs = {}
    for runtime in ("torch", "onnxruntime"):
        out = tmp_path / runtime
        result = run("detect", str(mass_phantom_dir), "--out", str(out), "--no-overlays", "--runtime", runtime)
        assert result.returncode == 0, result.stderr
        assert json.loads((out / "detect_run.json").read_text())["runtime"] == runtime
        outputs[runtime] = _findings(out)
    a, b = outputs["torch"], outputs["onnxruntime"]
    assert a["findings"], "the fixture exam should give findings"
    assert [f["finding_id"] for f in a["findings"]] == [f["finding_id"] for f in b["findings"]]
    for fa, fb in zip(a["findings"], b["findings"], strict=True):
        assert (fa["laterality"], fa["linked"]) == (fb["laterality"], fb["linked"])
        assert abs(fa["score"] - fb["score"]) <= 1e-4
        for va, vb in zip(fa["views"], fb["views"], strict=True):
            assert va["sop_instance_uid"] == vb["sop_instance_uid"]
            assert max(abs(x - y) for x, y in zip(va["box"], vb["box"])) <= 0.5
            assert abs(va["score"] - vb["score"]) <= 1e-4
    strip = lambda d: {k: v for k, v in d.items() if k != "findings"}  # noqa: E731
    assert strip(a) == strip(b)


@pytest.mark.req("SRS-RT-004")
def test_default_runtime_is_onnxruntime(mass_phantom_dir: Path, tmp_path: Path) -> None:
    result = run("detect", str(mass_phantom_dir), "--out", str(tmp_path), "--no-overlays")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "detect_run.json").read_text())["runtime"] == "onnxruntime"


@pytest.mark.req("SRS-RT-002")
def test_detect_refuses_a_damaged_onnx(mass_phantom_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    raw = bytearray((model / "detector.onnx").read_bytes())
    raw[len(raw) // 3] ^= 0x01
    (model / "detector.onnx").write_bytes(bytes(raw))
    result = run("detect", str(mass_phantom_dir), "--out", str(tmp_path / "out"), "--model", str(model),
                 "--runtime", "onnxruntime")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ONNX model does not match the manifest" in lines[0] and str(model) in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.req("SRS-RT-004")
def test_unknown_runtime_is_a_usage_error(mass_phantom_dir: Path, tmp_path: Path) -> None:
    result = run("detect", str(mass_phantom_dir), "--out", str(tmp_path), "--runtime", "openvino")
    assert result.returncode == 2 and "use torch, onnxruntime, onnxruntime-int8, tensorrt" in result.stderr


@pytest.mark.req("SRS-RT-004")
@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is available here: the refusal does not apply")
def test_tensorrt_without_gpu_exits_2_with_the_reason(mass_phantom_dir: Path, tmp_path: Path) -> None:
    result = run("detect", str(mass_phantom_dir), "--out", str(tmp_path / "out"), "--runtime", "tensorrt")
    assert result.returncode == 2
    assert "TensorRT needs a CUDA GPU and the tensorrt package; not available here" in result.stderr
    assert not (tmp_path / "out").exists()


def _box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union else 0.0


def _with_int8_verdict(tmp_path: Path, verdict: str | None) -> Path:
    """A copy of the released model whose int8 entry records ``verdict`` (None: no evaluation)."""
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    manifest = json.loads((model / "manifest.json").read_text())
    entry = manifest["runtimes"]["onnxruntime_int8"]
    entry.pop("acceptance", None)
    if verdict is not None:
        entry["acceptance"] = {"verdict": verdict, "protocol": "MCP-001 1.0", "record": "docs/acceptance/x.json"}
    (model / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return model


@pytest.mark.req("SRS-RT-008")
def test_an_int8_variant_not_accepted_under_the_protocol_does_not_run(mass_phantom_dir: Path, tmp_path: Path) -> None:
    released = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())["runtimes"]["onnxruntime_int8"]
    assert released["acceptance"]["verdict"] in ("accepted", "rejected")  # the released variant was judged
    for verdict, why in ((None, "has not been evaluated under the change protocol"),
                         ("rejected", "the change protocol rejected it")):
        model = _with_int8_verdict(tmp_path / str(verdict), verdict)
        result = run("detect", str(mass_phantom_dir), "--out", str(tmp_path / "out"), "--model", str(model),
                     "--runtime", "onnxruntime-int8")
        assert result.returncode == 2 and why in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.req("SRS-RT-008")
def test_the_int8_variant_runs_verified_and_is_named_in_every_output(mass_phantom_dir: Path, tmp_path: Path) -> None:
    from cad.report.sr.reader import read_mammography_cad_sr

    model = _with_int8_verdict(tmp_path, "accepted")  # the mechanism, whatever the released variant's verdict
    outputs = {}
    for runtime in ("onnxruntime", "onnxruntime-int8"):
        out = tmp_path / runtime
        result = run("detect", str(mass_phantom_dir), "--out", str(out), "--no-overlays", "--runtime", runtime,
                     "--model", str(model))
        assert result.returncode == 0, result.stderr
        (folder,) = [p.parent for p in out.rglob("findings.json")]
        outputs[runtime] = (json.loads((folder / "findings.json").read_text()),
                            read_mammography_cad_sr(folder / "cad-sr.dcm"),
                            json.loads((out / "detect_run.json").read_text()))
    (fp32, fp32_sr, _), (int8, int8_sr, run_file) = outputs["onnxruntime"], outputs["onnxruntime-int8"]
    assert "runtime_variant" not in fp32["algorithm"] and fp32_sr.algorithm.runtime_variant is None
    assert int8["algorithm"]["runtime_variant"] == "int8" and int8_sr.algorithm.runtime_variant == "int8"
    assert int8["algorithm"]["model_sha256"] == fp32["algorithm"]["model_sha256"] and run_file["runtime"] == "onnxruntime-int8"
    # the strongest fp32 finding is found by the int8 variant at the same place with a close score
    best = fp32["findings"][0]

    def overlap(finding: dict[str, Any]) -> float:
        return max([_box_iou(v["box"], w["box"]) for v in finding["views"] for w in best["views"]
                    if v["sop_instance_uid"] == w["sop_instance_uid"]], default=0.0)

    partner = max(int8["findings"], key=overlap)
    assert overlap(partner) >= 0.5 and abs(partner["score"] - best["score"]) <= 0.1


@pytest.mark.req("SRS-RT-008")
def test_a_damaged_int8_file_is_refused(mass_phantom_dir: Path, tmp_path: Path) -> None:
    model = _with_int8_verdict(tmp_path, "accepted")
    raw = bytearray((model / "detector-int8.onnx").read_bytes())
    raw[len(raw) // 3] ^= 0x01
    (model / "detector-int8.onnx").write_bytes(bytes(raw))
    result = run("detect", str(mass_phantom_dir), "--out", str(tmp_path / "out"), "--model", str(model),
                 "--runtime", "onnxruntime-int8")
    assert result.returncode == 3 and "int8 ONNX model does not match the manifest" in result.stderr
    assert not (tmp_path / "out").exists()
