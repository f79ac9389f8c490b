"""Choosing the runtime a site runs: ``make_runtime`` and whether TensorRT can run here.

Apart from :mod:`cad.detect.runtime` so that the TensorRT runtime (which reuses the ONNX
Runtime second stage) and the chooser import in one direction: runtime <- tensorrt <- runtimes.
The PyTorch and TensorRT runtimes are imported only when chosen: a site install has neither
torch nor tensorrt, and ONNX Runtime needs neither.
"""

from __future__ import annotations

import importlib.util

from cad.detect.detector import DEFAULT_MAX_BATCH
from cad.detect.locked import LockedModel
from cad.detect.runtime import (
    DEFAULT_RUNTIME,
    ONNX_INT8_EXPORT,
    OnnxRuntime,
    Runtime,
    RuntimeName,
    RuntimeUnavailableError,
)

#: what `--runtime torch` needs beyond the site install
TORCH_EXTRA = "the PyTorch runtime needs torch and torchvision (pip install 'mammo-cad[dev]')"


def torch_available() -> bool:
    """Whether torch and torchvision are installed (the development extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "torchvision"))


def tensorrt_available() -> bool:
    """Whether a CUDA GPU, torch and the ``tensorrt`` package are all present."""
    if not torch_available() or importlib.util.find_spec("tensorrt") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def variant_acceptance(model: LockedModel, key: str) -> str | None:
    """Why a runtime variant may not run at a site (None when it may): a variant runs only after
    its acceptance under the change protocol is recorded beside it in the manifest
    (``runtimes.<key>.acceptance.verdict == "accepted"``, written by `cad release compare`)."""
    entry = model.manifest.runtimes.get(key, {})
    acceptance = entry.get("acceptance") if isinstance(entry, dict) else None
    if not isinstance(acceptance, dict):
        return "it has not been evaluated under the change protocol (docs/change-control.md)"
    if acceptance.get("verdict") != "accepted":
        return (f"the change protocol rejected it ({acceptance.get('protocol')}, record "
                f"{acceptance.get('record')})")
    return None


def make_runtime(
    model: LockedModel, name: str | RuntimeName = DEFAULT_RUNTIME, max_batch: int = DEFAULT_MAX_BATCH,
    evaluation: bool = False,
) -> Runtime:
    """The runtime called ``name`` for ``model`` (verified; errors are ModelIntegrityError or
    RuntimeUnavailableError). A runtime variant (int8) runs only when accepted under the change
    protocol, except for ``evaluation`` (the protocol's own runs)."""
    kind = RuntimeName(name)
    if kind is RuntimeName.ONNXRUNTIME:
        return OnnxRuntime(model, max_batch=max_batch)
    if kind is RuntimeName.ONNXRUNTIME_INT8:
        refused = None if evaluation else variant_acceptance(model, ONNX_INT8_EXPORT.key)
        if refused is not None:
            raise RuntimeUnavailableError(f"{model.path}: the int8 variant may not run: {refused}")
        return OnnxRuntime(model, max_batch=max_batch, int8=True)
    if kind is RuntimeName.TENSORRT:
        if not tensorrt_available():
            raise RuntimeUnavailableError("TensorRT needs a CUDA GPU and the tensorrt package; not available here")
        from cad.detect.tensorrt import TensorRTRuntime

        return TensorRTRuntime(model, max_batch=max_batch)
    if not torch_available():
        raise RuntimeUnavailableError(TORCH_EXTRA)
    from cad.detect.torch_runtime import TorchRuntime

    return TorchRuntime(model, max_batch=max_batch)
