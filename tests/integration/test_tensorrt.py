"""TensorRT FP16 engine: build, parity with ONNX Runtime, verification (SRS-RT-005). GPU only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cad.detect.inputs import prepare_view
from cad.detect.locked import DEFAULT_MODEL_DIR, ModelIntegrityError, load_locked_model
from cad.detect.runtime import OnnxRuntime, tensorrt_available
from cad.io import load

pytestmark = pytest.mark.skipif(not tensorrt_available(),
                                reason="TensorRT needs a CUDA GPU and the tensorrt package (not on this machine)")


@pytest.fixture(scope="module")
def engine_model(tmp_path_factory: pytest.TempPathFactory, mass_phantom_dir: Path) -> Path:
    """A copy of the released model with a TensorRT engine built and registered."""
    from cad_torch.export.tensorrt import export_tensorrt

    model_dir = tmp_path_factory.mktemp("trt") / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model_dir)
    model = load_locked_model(model_dir)
    views = [prepare_view(image, model.config) for image in load([mass_phantom_dir]).images]
    export_tensorrt(model, model_dir, views)
    return model_dir


@pytest.mark.req("SRS-RT-005")
def test_engine_is_registered_with_its_gpu_and_parity(engine_model: Path) -> None:
    entry = json.loads((engine_model / "manifest.json").read_text())["runtimes"]["tensorrt"]
    model = load_locked_model(engine_model)
    assert entry["source_weights_sha256"] == model.sha256
    assert entry["parity_vs_onnxruntime"]["passed"] and entry["parity_vs_onnxruntime"]["detections_compared"] > 0
    assert entry["precision"].startswith("fp16") and entry["gpu"]


@pytest.mark.req("SRS-RT-005")
def test_engine_detections_agree_with_onnxruntime(engine_model: Path, phantom_dir: Path) -> None:
    from cad_torch.export.tensorrt import parity
    from cad_torch.tensorrt_runtime import TensorRTRuntime

    model = load_locked_model(engine_model)
    views = [prepare_view(image, model.config) for image in load([phantom_dir]).images]
    result = parity(OnnxRuntime(model).detect(views), TensorRTRuntime(model).detect(views))
    assert result["passed"], result


@pytest.mark.req("SRS-RT-005")
def test_damaged_engine_is_refused(engine_model: Path, tmp_path: Path) -> None:
    from cad_torch.tensorrt_runtime import ENGINE_FILE, TensorRTRuntime

    copy = tmp_path / "model"
    shutil.copytree(engine_model, copy)
    raw = bytearray((copy / ENGINE_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (copy / ENGINE_FILE).write_bytes(bytes(raw))
    with pytest.raises(ModelIntegrityError, match="TensorRT engine does not match the manifest"):
        TensorRTRuntime(load_locked_model(copy))
