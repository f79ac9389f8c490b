"""Inference runtimes for the locked detector's network: what they share, ONNX Runtime, and
choosing the runtime a site runs (``make_runtime``).

Every runtime turns prepared views into :class:`~cad.detect.postprocess.ViewDetections`, and one
breast's candidates into second-stage logits (:mod:`cad.detect.rescore`). ONNX Runtime (here),
PyTorch (:mod:`cad_torch.runtime`, the reference) and TensorRT (:mod:`cad_torch.tensorrt_runtime`)
differ only in what computes the backbone, FPN and heads; anchors, box decoding, NMS, clipping
and sorting are the numpy code of :mod:`cad.detect.postprocess` for ONNX Runtime and TensorRT, so a
site runs without torch. The ONNX file that runs is verified against the SHA-256 in the model
manifest before use, like the weights.

The PyTorch and TensorRT runtimes belong to the torch side (the ``mammo-cad-torch``
distribution, package :mod:`cad_torch`), which a site installs only on a GPU host: they join
through the ``cad.runtimes`` entry points (:data:`RUNTIME_PLUGINS`), never by an import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import numpy as np

from cad.detect.inputs import ViewInput
from cad.detect.locked import ExportKind, LockedModel, ModelIntegrityError, verified_export
from cad.detect.postprocess import DEFAULT_MAX_BATCH, ViewDetections, detect_with_heads
from cad.detect.rescore import BreastInputs
from cad.errors import UsageError


class RuntimeName(str, Enum):
    """The runtimes `cad detect --runtime` accepts."""

    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    #: the int8 variant of the ONNX export (static QDQ quantisation; a runtime variant of the
    #: locked model, named in every result it produces)
    ONNXRUNTIME_INT8 = "onnxruntime-int8"
    TENSORRT = "tensorrt"


#: the runtime `cad detect` uses unless told otherwise: ONNX Runtime, adopted because its
#: parity with PyTorch is verified (SRS-RT-003, tests/integration/test_onnx_runtime.py)
DEFAULT_RUNTIME = RuntimeName.ONNXRUNTIME


class RuntimeUnavailableError(UsageError, RuntimeError):
    """The runtime cannot run on this machine (missing package or hardware)."""


class Runtime(Protocol):
    """Runs the locked network on prepared views, batching views of equal shape, and the second
    stage (when the model has one) on one breast's candidates."""

    name: str
    max_batch: int
    #: None for the locked model's reference precision; else the variant named in every result
    variant: str | None

    def detect(self, inputs: list[ViewInput]) -> list[ViewDetections]: ...

    def rescore(self, inputs: BreastInputs) -> tuple[np.ndarray, np.ndarray]: ...


def default_threads() -> int:
    """Threads a CPU runtime uses: the CPUs this process may run on (``CAD_THREADS`` overrides);
    fixed per machine, so a session is built the same way on every run."""
    configured = os.environ.get("CAD_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: the second stage's ONNX export as the manifest records it (cad export --format onnx)
RESCORER_ONNX_EXPORT = ExportKind("onnxruntime_rescorer", "ONNX second-stage model", "ONNX export of the second stage",
                                  "exported", "run `cad export --format onnx --out <model folder>` or use --runtime torch")


class OnnxRescorer:
    """The second stage in ONNX Runtime (CPU), verified like the first; the GPU runtimes use it
    too, since the second stage costs milliseconds per breast."""

    def __init__(self, model: LockedModel, threads: int | None = None) -> None:
        import onnxruntime as ort

        raw, _, _ = verified_export(model, RESCORER_ONNX_EXPORT)
        self.session = _session(ort, raw, model, threads)

    def rescore(self, inputs: BreastInputs) -> tuple[np.ndarray, np.ndarray]:
        if len(inputs) == 0:
            return np.zeros(0), np.zeros(0)
        feed = {"patches": inputs.patches, "own": inputs.own, "index": inputs.pairs.index,
                "pair": inputs.pairs.features, "mask": inputs.pairs.mask}
        single, dual = self.session.run(None, feed)
        return single.astype(np.float64), dual.astype(np.float64)


def _session(ort: Any, raw: bytes, model: LockedModel, threads: int | None) -> Any:
    """A deterministic CPU session (fixed threads, sequential, fixed graph optimisation)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OnnxRuntime.GRAPH_OPTIMIZATION)
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(raw, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelIntegrityError(f"{model.path}: ONNX model does not load ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:160]})") from None


#: the ONNX export as the manifest records it (cad export --format onnx)
ONNX_EXPORT = ExportKind(RuntimeName.ONNXRUNTIME.value, "ONNX model", "ONNX export", "exported",
                         "run `cad export --format onnx --out <model folder>` or use --runtime torch")
#: its int8 variant (cad export --format onnx-int8)
ONNX_INT8_EXPORT = ExportKind("onnxruntime_int8", "int8 ONNX model", "int8 ONNX export", "quantised",
                              "run `cad export --format onnx-int8 --calibration DIR --out <model folder>`")


class OnnxRuntime:
    """Backbone, FPN and heads in ONNX Runtime (CPU); postprocessing in numpy
    (:func:`cad.detect.postprocess.detect_with_heads`).

    Session: CPUExecutionProvider, intra-op threads = :func:`default_threads` (on this machine the
    same budget as PyTorch's default), one inter-op thread, sequential execution, graph
    optimisation level ORT_ENABLE_ALL (fixed, so the fused graph is the same on every run).
    """

    GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"

    def __init__(self, model: LockedModel, threads: int | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 int8: bool = False) -> None:
        import onnxruntime as ort

        self.name = (RuntimeName.ONNXRUNTIME_INT8 if int8 else RuntimeName.ONNXRUNTIME).value
        self.variant: str | None = "int8" if int8 else None
        raw, _, _ = verified_export(model, ONNX_INT8_EXPORT if int8 else ONNX_EXPORT)
        self.session = _session(ort, raw, model, threads)
        self.rescorer = OnnxRescorer(model, threads) if model.rescore_settings is not None else None
        self.model = model
        self.max_batch = max_batch
        self.input_name = self.session.get_inputs()[0].name

    def run_heads(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Head outputs of a float32 batch [N, 1, H, W]."""
        cls_logits, bbox_regression = self.session.run(None, {self.input_name: array})
        return cls_logits, bbox_regression

    def detect(self, inputs: list[ViewInput]) -> list[ViewDetections]:
        return detect_with_heads(self.model.config, inputs, self.max_batch, self.run_heads)

    def rescore(self, inputs: BreastInputs) -> tuple[np.ndarray, np.ndarray]:
        if self.rescorer is None:
            raise ValueError(f"{self.model.path}: the model has no second stage")
        return self.rescorer.rescore(inputs)


#: entry-point group through which the torch side adds the runtimes it holds (``torch``,
#: ``tensorrt``); each entry is a :class:`RuntimePlugin`
RUNTIME_PLUGINS = "cad.runtimes"
#: the distribution that holds the PyTorch and TensorRT runtimes
TORCH_SIDE = "mammo-cad-torch"


@dataclass(frozen=True)
class RuntimePlugin:
    """A runtime another distribution adds: why it cannot run here (None when it can), and how
    to make it. Both import their heavy packages only when called."""

    unavailable: Callable[[], str | None]
    make: Callable[[LockedModel, int], Runtime]


def runtime_plugin(name: RuntimeName) -> RuntimePlugin | None:
    """The installed plugin of runtime ``name`` (None when no installed distribution adds it)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=RUNTIME_PLUGINS, name=name.value):
        plugin = entry.load()
        if isinstance(plugin, RuntimePlugin):
            return plugin
    return None


def runtime_unavailable(name: str | RuntimeName) -> str | None:
    """Why runtime ``name`` cannot run on this machine (None when it can)."""
    kind = RuntimeName(name)
    if kind in (RuntimeName.ONNXRUNTIME, RuntimeName.ONNXRUNTIME_INT8):
        return None
    return _plugin_unavailable(kind, runtime_plugin(kind))


def _plugin_unavailable(kind: RuntimeName, plugin: RuntimePlugin | None) -> str | None:
    if plugin is None:
        extra = "[tensorrt]" if kind is RuntimeName.TENSORRT else ""
        return (f"the {kind.value} runtime belongs to the torch side, which is not installed here "
                f"(pip install '{TORCH_SIDE}{extra}')")
    return plugin.unavailable()


def tensorrt_available() -> bool:
    """Whether the TensorRT runtime can run here (the torch side, the tensorrt package and a CUDA GPU)."""
    return runtime_unavailable(RuntimeName.TENSORRT) is None


def variant_acceptance(model: LockedModel, key: str) -> str | None:
    """Why a runtime variant may not run at a site (None when it may): a variant runs only after
    its acceptance under the change protocol is recorded beside it in the manifest
    (``runtimes.<key>.acceptance.verdict == "accepted"``, written by `cad release compare`)."""
    entry = model.manifest.runtimes.get(key)
    acceptance = entry.acceptance if entry is not None else None
    if acceptance is None:
        return "it has not been evaluated under the change protocol (docs/change-control.md)"
    if not acceptance.accepted:
        return f"the change protocol rejected it ({acceptance.protocol}, record {acceptance.record})"
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
    plugin = runtime_plugin(kind)
    reason = _plugin_unavailable(kind, plugin)
    if reason is not None or plugin is None:
        raise RuntimeUnavailableError(reason or f"the {kind.value} runtime is not installed here")
    return plugin.make(model, max_batch)
