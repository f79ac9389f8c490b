"""ONNX export, ONNX Runtime parity with PyTorch, and verification of the .onnx (SRS-RT-*)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from cad.analysis.pipeline import detect_views
from cad.detect.locked import DEFAULT_MODEL_DIR, ModelIntegrityError, load_locked_model
from cad.detect.runtime import OnnxRuntime, RuntimeUnavailableError, make_runtime, tensorrt_available
from cad.io import load
from cad_torch.export.onnx import ONNX_FILE, ONNX_MANIFEST_FILE, export_onnx, register_onnx
from cad_torch.runtime import TorchRuntime

BOX_PX = 0.5
SCORE = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the released model with a fresh export registered in its manifest."""
    model_dir = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model_dir)
    (model_dir / ONNX_FILE).unlink()
    manifest = json.loads((model_dir / "manifest.json").read_text())
    del manifest["runtimes"]
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    entry = export_onnx(load_locked_model(model_dir), model_dir / "export")
    shutil.copy(model_dir / "export" / ONNX_FILE, model_dir / ONNX_FILE)
    register_onnx(model_dir, entry)
    return model_dir


@pytest.mark.req("SRS-RT-001")
def test_export_writes_a_checked_dynamic_fp16_graph_and_its_manifest(exported: Path) -> None:
    entry = json.loads((exported / "export" / ONNX_MANIFEST_FILE).read_text())
    locked = load_locked_model(exported)
    assert entry == locked.manifest.runtimes["onnxruntime"].raw
    assert entry["source_weights_sha256"] == locked.sha256
    assert {"sha256", "opset", "exporter", "torch", "onnx", "inputs", "outputs"} <= set(entry)
    proto = onnx.load(str(exported / ONNX_FILE))
    onnx.checker.check_model(proto)
    (image,) = proto.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.name == "image" and dims[1].dim_value == 1
    assert all(dims[k].dim_param for k in (0, 2, 3)), "batch, H and W must be dynamic"
    assert [o.name for o in proto.graph.output] == ["cls_logits", "bbox_regression"]
    assert {i.data_type for i in proto.graph.initializer} == {TensorProto.FLOAT16}
    assert (exported / ONNX_FILE).stat().st_size < 30e6
    shipped = load_locked_model().manifest.runtimes["onnxruntime"].raw
    if (shipped["torch"], shipped["onnx"]) == (entry["torch"], entry["onnx"]):
        assert entry["sha256"] == shipped["sha256"], "same weights and versions must export the same bytes"
    # the manifest keeps its formatting and the settings hash does not see the new key
    text = (exported / "manifest.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert locked.manifest.settings_sha256() == load_locked_model().settings_sha256


def _compare(torch_views: list, onnx_views: list) -> tuple[float, float]:
    box, score = 0.0, 0.0
    for a, b in zip(torch_views, onnx_views, strict=True):
        assert len(a.detections) == len(b.detections)
        if len(a.detections):
            box = max(box, float(np.abs(a.detections.boxes - b.detections.boxes).max()),
                      float(np.abs(a.detections.model_boxes - b.detections.model_boxes).max()))
            score = max(score, float(np.abs(a.detections.scores - b.detections.scores).max()))
    return box, score


@pytest.mark.req("SRS-RT-001", "SRS-RT-003")
def test_fresh_export_matches_pytorch(exported: Path, mass_phantom_dir: Path) -> None:
    model = load_locked_model(exported)
    images = load([mass_phantom_dir]).images
    reference, _ = detect_views(model, images, TorchRuntime(model))
    candidate, _ = detect_views(model, images, OnnxRuntime(model))
    box, score = _compare(reference, candidate)
    assert box <= BOX_PX and score <= SCORE


@pytest.mark.req("SRS-RT-003")
def test_shipped_onnx_gives_the_pytorch_detections(mass_phantom_dir: Path, phantom_dir: Path) -> None:
    model = load_locked_model()
    onnx_runtime = OnnxRuntime(model)
    for folder in (mass_phantom_dir, phantom_dir):
        images = load([folder]).images
        reference, _ = detect_views(model, images, TorchRuntime(model, max_batch=1))
        candidate, _ = detect_views(model, images, onnx_runtime)
        assert sum(len(v.detections) for v in reference) > 0
        box, score = _compare(reference, candidate)
        assert box <= BOX_PX, f"{folder.name}: boxes differ by {box:.3g} px"
        assert score <= SCORE, f"{folder.name}: scores differ by {score:.3g}"


@pytest.mark.req("SRS-RT-002")
@pytest.mark.parametrize("damage", ["flip_byte", "other_weights", "no_entry", "no_file"])
def test_onnx_that_is_not_the_verified_one_is_refused(damage: str, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    if damage == "flip_byte":
        raw = bytearray((model_dir / ONNX_FILE).read_bytes())
        raw[len(raw) // 2] ^= 0x01
        (model_dir / ONNX_FILE).write_bytes(bytes(raw))
        expected = "ONNX model does not match the manifest"
    elif damage == "other_weights":
        manifest["runtimes"]["onnxruntime"]["source_weights_sha256"] = "0" * 64
        expected = "exported from other weights"
    elif damage == "no_entry":
        del manifest["runtimes"]
        expected = "names no ONNX export"
    else:
        (model_dir / ONNX_FILE).unlink()
        expected = "ONNX model not found"
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    model = load_locked_model(model_dir)  # the weights themselves are intact
    with pytest.raises(ModelIntegrityError, match=expected):
        OnnxRuntime(model)


@pytest.mark.req("SRS-RT-004")
@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is available here: the refusal does not apply")
def test_tensorrt_without_gpu_is_refused_clearly() -> None:
    with pytest.raises(RuntimeUnavailableError, match="TensorRT needs a CUDA GPU and the tensorrt package"):
        make_runtime(load_locked_model(), "tensorrt")
