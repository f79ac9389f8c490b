"""The TensorRT runtime: a hash-verified FP16 engine of the locked detector's network part.

A TensorRT engine is specific to the GPU model and TensorRT version that built it, so it is
built at the site (`cad export --format tensorrt --out <model folder>`, :mod:`cad_torch.export.tensorrt`)
and recorded in the model manifest under ``runtimes.tensorrt`` with its SHA-256, the GPU, the
TensorRT version and the parity measured against ONNX Runtime at build time. The runtime refuses
an engine whose hash, source weights or GPU do not match. Postprocessing (anchors, decoding,
NMS) is the numpy code of :mod:`cad.detect.postprocess`, as for ONNX Runtime.

Nothing here runs without a CUDA GPU and the ``tensorrt`` package; tests that need them skip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cad.detect.inputs import SIZE_DIVISIBLE, ViewInput
from cad.detect.locked import ExportKind, LockedModel, ModelIntegrityError, verified_export
from cad.detect.postprocess import DEFAULT_MAX_BATCH, INPUT_NAME, OUTPUT_NAMES, ViewDetections, detect_with_heads
from cad.detect.rescore import BreastInputs
from cad.detect.runtime import OnnxRescorer

ENGINE_FILE = "detector.plan"
RUNTIME_KEY = "tensorrt"
#: the engine as the manifest records it (cad export --format tensorrt, on the site's GPU)
TENSORRT_ENGINE = ExportKind(RUNTIME_KEY, "TensorRT engine", "TensorRT engine", "built",
                             "build one on this GPU with `cad export --format tensorrt --out <model folder>`")
#: the optimisation profile: (batch, height, width) minimum, optimum and maximum
PROFILE = {"min": (1, 2 * SIZE_DIVISIBLE, 2 * SIZE_DIVISIBLE), "opt": (4, 640, 512), "max": (16, 1536, 1536)}


def _trt() -> Any:
    import tensorrt

    return tensorrt


def gpu_identity() -> dict[str, str]:
    """The GPU an engine is built for: name and compute capability."""
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


class TensorRTRuntime:
    """The hash-verified engine on the GPU; postprocessing as the other runtimes."""

    name = RUNTIME_KEY
    variant: str | None = "fp16"

    def __init__(self, model: LockedModel, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        raw, entry, path = verified_export(model, TENSORRT_ENGINE, frozenset({"gpu"}))
        here = gpu_identity()
        if here["gpu"] != entry["gpu"] or here["compute_capability"] != entry.get("compute_capability"):
            raise ModelIntegrityError(f"{path}: engine built for {entry['gpu']}, this GPU is {here['gpu']}; "
                                      "rebuild it here with `cad export --format tensorrt`")
        trt = _trt()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(raw)
        if self.engine is None:
            raise ModelIntegrityError(f"{path}: TensorRT could not load the engine (other TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.model = model
        self.max_batch = min(max_batch, PROFILE["max"][0])
        self.stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch's Stream() has no type hints
        self.rescorer = OnnxRescorer(model) if model.rescore_settings is not None else None

    def run_heads(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Head outputs (on the CPU) of a float32 batch [N, 1, H, W]."""
        with torch.cuda.stream(self.stream):
            image = torch.from_numpy(array).cuda(non_blocking=False)
            self.context.set_input_shape(INPUT_NAME, tuple(array.shape))
            outputs = {}
            for name in OUTPUT_NAMES:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            self.context.set_tensor_address(INPUT_NAME, image.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return outputs["cls_logits"].cpu().numpy(), outputs["bbox_regression"].cpu().numpy()

    def detect(self, inputs: list[ViewInput]) -> list[ViewDetections]:
        return detect_with_heads(self.model.config, inputs, self.max_batch, self.run_heads)

    def rescore(self, inputs: BreastInputs) -> tuple[np.ndarray, np.ndarray]:
        """The second stage in ONNX Runtime on the CPU (milliseconds per breast)."""
        if self.rescorer is None:
            raise ValueError(f"{self.model.path}: the model has no second stage")
        return self.rescorer.rescore(inputs)
