"""Building a TensorRT FP16 engine at the site and checking it against ONNX Runtime.

The engine is built from a float16 ONNX export of the same network (float32 input and outputs,
float16 inside), parsed as a *strongly typed* network: TensorRT 11 removed the precision builder
flags, and strong typing gives the same engine precision on TensorRT 10 and 11. Parity is
measured on the site's own images (``cad export --format tensorrt --parity-input``), so the
device needs no phantom generator.
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

from cad.detect.inputs import ViewInput
from cad.detect.locked import LockedModel, register_export, sha256_file
from cad.detect.postprocess import INPUT_NAME, ViewDetections
from cad.detect.runtime import OnnxRuntime
from cad_torch.export.onnx import HeadNetwork, export_proto
from cad_torch.network import locked_network
from cad_torch.tensorrt_runtime import ENGINE_FILE, PROFILE, RUNTIME_KEY, TensorRTRuntime, _trt, gpu_identity

FP16_ONNX_FILE = "detector-fp16.onnx"
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
    proto = export_proto(Fp16HeadNetwork(HeadNetwork(copy.deepcopy(locked_network(model)))).eval())
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return sha256_file(path)


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
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_sha = export_fp16_onnx(model, out_dir / FP16_ONNX_FILE)
    entry = build_engine(out_dir / FP16_ONNX_FILE, out_dir / ENGINE_FILE)
    entry.update({"onnx_fp16": FP16_ONNX_FILE, "onnx_fp16_sha256": onnx_sha, "source_weights_sha256": model.sha256,
                  "model_name": model.name})
    registered = out_dir.resolve() == model.path.resolve()
    probe = replace(model, manifest=model.manifest.with_export(RUNTIME_KEY, entry), path=out_dir)
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
