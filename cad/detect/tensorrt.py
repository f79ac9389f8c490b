"""TensorRT FP16 engines of the locked detector's network part, and the runtime that runs them.

The engine is built from a float16 ONNX export of the same network (float32 input and outputs,
float16 inside), parsed as a *strongly typed* network: TensorRT 11 removed the precision builder
flags, and strong typing gives the same engine precision on TensorRT 10 and 11. Postprocessing
(anchors, decoding, NMS) is the shared torchvision code, as for every runtime.

A TensorRT engine is specific to the GPU model and TensorRT version that built it, so it is
built at the site (`cad export --format tensorrt --out <model folder>`) and recorded in the model
manifest under ``runtimes.tensorrt`` with its SHA-256, the GPU, the TensorRT version and the
parity measured against ONNX Runtime at build time. The runtime refuses an engine whose hash,
source weights or GPU do not match.

Nothing here runs without a CUDA GPU and the ``tensorrt`` package; tests that need them skip.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torchvision.ops import box_iou

from cad.detect.detector import DEFAULT_MAX_BATCH, ViewDetections, detect_with_heads
from cad.detect.inputs import SIZE_DIVISIBLE, ViewInput
from cad.detect.locked import (
    RUNTIMES_KEY,
    ExportKind,
    LockedModel,
    ModelIntegrityError,
    register_export,
    sha256_file,
    verified_export,
)
from cad.detect.onnx_export import INPUT_NAME, OUTPUT_NAMES, HeadNetwork, export_proto
from cad.detect.rescore import BreastInputs

ENGINE_FILE = "detector.plan"
FP16_ONNX_FILE = "detector-fp16.onnx"
RUNTIME_KEY = "tensorrt"
#: the engine as the manifest records it (cad export --format tensorrt, on the site's GPU)
TENSORRT_ENGINE = ExportKind(RUNTIME_KEY, "TensorRT engine", "TensorRT engine", "built",
                             "build one on this GPU with `cad export --format tensorrt --out <model folder>`")
#: the optimisation profile: (batch, height, width) minimum, optimum and maximum
PROFILE = {"min": (1, 2 * SIZE_DIVISIBLE, 2 * SIZE_DIVISIBLE), "opt": (4, 640, 512), "max": (16, 1536, 1536)}
#: FP16 parity with ONNX Runtime (float32) over detections scoring at least PARITY_FLOOR
PARITY_FLOOR = 0.05
PARITY_SCORE = 0.02
PARITY_IOU = 0.9


class Fp16HeadNetwork(torch.nn.Module):
    """:class:`HeadNetwork` computing in float16 between a float32 input and float32 outputs."""

    def __init__(self, head: HeadNetwork) -> None:
        super().__init__()
        self.inner = head.half()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls_logits, bbox_regression = self.inner(image.half())
        return cls_logits.float(), bbox_regression.float()


def export_fp16_onnx(model: LockedModel, path: Path) -> str:
    """Write the float16 ONNX graph TensorRT builds from; returns its SHA-256."""
    proto = export_proto(Fp16HeadNetwork(HeadNetwork(copy.deepcopy(model.network))).eval())
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return sha256_file(path)


def _trt() -> Any:
    import tensorrt

    return tensorrt


def gpu_identity() -> dict[str, str]:
    """The GPU an engine is built for: name and compute capability."""
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


def build_engine(onnx_path: Path, engine_path: Path, workspace_gb: float = 8.0) -> dict[str, Any]:
    """Build a strongly typed engine from the float16 ONNX graph; returns its manifest facts."""
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    shapes = {k: (b, 1, h, w) for k, (b, h, w) in PROFILE.items()}
    profile.set_shape(INPUT_NAME, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT could not build an engine")
    engine_path.write_bytes(bytes(serialized))
    return {"file": engine_path.name, "sha256": sha256_file(engine_path), "bytes": engine_path.stat().st_size,
            "tensorrt": trt.__version__, "precision": "fp16 (strongly typed)",
            "profile": {k: list(v) for k, v in shapes.items()}, **gpu_identity()}


class TensorRTRuntime:
    """The hash-verified engine on the GPU; postprocessing as the other runtimes."""

    name = RUNTIME_KEY

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
        self.stream = torch.cuda.Stream()
        from cad.detect.runtime import OnnxRescorer

        self.rescorer = OnnxRescorer(model) if model.rescorer is not None else None

    def run_heads(self, array: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
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
        return outputs["cls_logits"].cpu(), outputs["bbox_regression"].cpu()

    def detect(self, inputs: list[ViewInput]) -> list[ViewDetections]:
        return detect_with_heads(self.model.network, inputs, self.max_batch, self.run_heads)

    def rescore(self, inputs: BreastInputs) -> tuple[np.ndarray, np.ndarray]:
        """The second stage in ONNX Runtime on the CPU (milliseconds per breast)."""
        if self.rescorer is None:
            raise ValueError(f"{self.model.path}: the model has no second stage")
        return self.rescorer.rescore(inputs)


def parity(reference: list[ViewDetections], candidate: list[ViewDetections]) -> dict[str, Any]:
    """FP16 against float32 detections, view by view: every detection scoring at least
    :data:`PARITY_FLOOR` in either must have a partner (IoU at least :data:`PARITY_IOU`) whose
    score differs by at most :data:`PARITY_SCORE`."""
    unmatched, worst_score, worst_iou, compared = 0, 0.0, 1.0, 0
    for ref, cand in zip(reference, candidate, strict=True):
        for a, b in ((ref, cand), (cand, ref)):
            keep = a.scores >= PARITY_FLOOR
            for box, score in zip(a.model_boxes[keep], a.scores[keep]):
                compared += 1
                if len(b) == 0:
                    unmatched += 1
                    continue
                ious = box_iou(torch.as_tensor(box[None]), torch.as_tensor(b.model_boxes))[0].numpy()
                k = int(np.argmax(ious))
                if ious[k] < PARITY_IOU or abs(b.scores[k] - score) > PARITY_SCORE:
                    unmatched += 1
                worst_iou = min(worst_iou, float(ious[k]))
                worst_score = max(worst_score, float(abs(b.scores[k] - score)))
    return {"views": len(reference), "detections_compared": compared, "unmatched": unmatched,
            "min_iou": round(worst_iou, 4), "max_score_difference": round(worst_score, 5),
            "rule": f"score >= {PARITY_FLOOR}: partner with IoU >= {PARITY_IOU} and |score difference| <= "
                    f"{PARITY_SCORE}", "passed": unmatched == 0}


def export_tensorrt(model: LockedModel, out_dir: Path, parity_views: list[ViewInput]) -> dict[str, Any]:
    """Build the engine into ``out_dir``, check it against ONNX Runtime on ``parity_views`` and
    record it in the model manifest when ``out_dir`` is the model folder. Raises RuntimeError
    when parity fails (the engine is then deleted)."""
    from cad.detect.runtime import OnnxRuntime

    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_sha = export_fp16_onnx(model, out_dir / FP16_ONNX_FILE)
    entry = build_engine(out_dir / FP16_ONNX_FILE, out_dir / ENGINE_FILE)
    entry.update({"onnx_fp16": FP16_ONNX_FILE, "onnx_fp16_sha256": onnx_sha, "source_weights_sha256": model.sha256,
                  "model_name": model.name})
    registered = out_dir.resolve() == model.path.resolve()
    runtimes = {**model.manifest.get(RUNTIMES_KEY, {}), RUNTIME_KEY: entry}
    probe = replace(model, manifest={**model.manifest, RUNTIMES_KEY: runtimes}, path=out_dir)
    reference = OnnxRuntime(model).detect(parity_views)
    candidate = TensorRTRuntime(probe).detect(parity_views)
    entry["parity_vs_onnxruntime"] = parity(reference, candidate)
    if not entry["parity_vs_onnxruntime"]["passed"]:
        (out_dir / ENGINE_FILE).unlink()
        raise RuntimeError(f"TensorRT engine differs from ONNX Runtime beyond tolerance: {entry['parity_vs_onnxruntime']}")
    if registered:
        register_export(model.path, RUNTIME_KEY, entry)
    else:
        (out_dir / "tensorrt_manifest.json").write_text(json.dumps(entry, indent=2, sort_keys=True) + "\n")
    return entry
