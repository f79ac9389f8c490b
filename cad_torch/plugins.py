"""The runtimes the torch side adds to the device (entry points ``cad.runtimes``).

Light on purpose: asking whether a runtime can run here imports neither torch nor tensorrt;
making one imports them.
"""

from __future__ import annotations

import importlib.util

from cad.detect.locked import LockedModel
from cad.detect.runtime import Runtime, RuntimePlugin


def torch_unavailable() -> str | None:
    """Why the PyTorch runtime cannot run here (None when it can)."""
    missing = [name for name in ("torch", "torchvision") if importlib.util.find_spec(name) is None]
    return f"the PyTorch runtime needs {' and '.join(missing)}, not installed here" if missing else None


def tensorrt_unavailable() -> str | None:
    """Why the TensorRT runtime cannot run here: it needs torch (its CUDA buffers), the tensorrt
    package and a CUDA GPU."""
    reason = "TensorRT needs a CUDA GPU and the tensorrt package; not available here"
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("torch") is None:
        return reason
    import torch

    return None if torch.cuda.is_available() else reason


def _make_torch(model: LockedModel, max_batch: int) -> Runtime:
    from cad_torch.runtime import TorchRuntime

    return TorchRuntime(model, max_batch=max_batch)


def _make_tensorrt(model: LockedModel, max_batch: int) -> Runtime:
    from cad_torch.tensorrt_runtime import TensorRTRuntime

    return TensorRTRuntime(model, max_batch=max_batch)


TORCH = RuntimePlugin(torch_unavailable, _make_torch)
TENSORRT = RuntimePlugin(tensorrt_unavailable, _make_tensorrt)
