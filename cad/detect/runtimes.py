"""Choosing the runtime a site runs: ``make_runtime`` and whether TensorRT can run here.

Apart from :mod:`cad.detect.runtime` so that the TensorRT runtime (which reuses the ONNX
Runtime second stage) and the chooser import in one direction: runtime <- tensorrt <- runtimes.
"""

from __future__ import annotations

import importlib.util

import torch

from cad.detect.detector import DEFAULT_MAX_BATCH
from cad.detect.locked import LockedModel
from cad.detect.runtime import DEFAULT_RUNTIME, OnnxRuntime, Runtime, RuntimeName, RuntimeUnavailableError, TorchRuntime
from cad.detect.tensorrt import TensorRTRuntime


def tensorrt_available() -> bool:
    """Whether a CUDA GPU and the ``tensorrt`` package are both present."""
    return torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None


def make_runtime(
    model: LockedModel, name: str | RuntimeName = DEFAULT_RUNTIME, max_batch: int = DEFAULT_MAX_BATCH
) -> Runtime:
    """The runtime called ``name`` for ``model`` (verified; errors are ModelIntegrityError or
    RuntimeUnavailableError)."""
    kind = RuntimeName(name)
    if kind is RuntimeName.ONNXRUNTIME:
        return OnnxRuntime(model, max_batch=max_batch)
    if kind is RuntimeName.ONNXRUNTIME_INT8:
        return OnnxRuntime(model, max_batch=max_batch, int8=True)
    if kind is RuntimeName.TENSORRT:
        if not tensorrt_available():
            raise RuntimeUnavailableError("TensorRT needs a CUDA GPU and the tensorrt package; not available here")
        return TensorRTRuntime(model, max_batch=max_batch)
    return TorchRuntime(model, max_batch=max_batch)
