"""ONNX export of the locked detector's network part (backbone + FPN + heads).

Only the convolutional part goes to ONNX: anchors, box decoding and NMS stay in Python and are
torchvision's own RetinaNet code (:func:`cad_torch.runtime.decode_head_outputs`), so the
ONNX Runtime path and the PyTorch path share every step after the heads.

The weights are stored as float16 in ``weights.safetensors``; the export keeps every
initializer that is exactly representable in float16 as float16 followed by a ``Cast`` to
float32, so the file is half the size and computes with the very same float32 values.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torchvision.models.detection import RetinaNet

from cad.detect.inputs import SIZE_DIVISIBLE
from cad.detect.locked import LockedModel, register_export, sha256_file
from cad.detect.postprocess import INPUT_NAME, OUTPUT_NAMES
from cad.detect.rescore import OWN_FEATURES, PAIR_FEATURES, PATCH
from cad_torch.network import locked_network, locked_rescorer
from cad_torch.rescore_network import DualViewRescorer

ONNX_FILE = "detector.onnx"
ONNX_MANIFEST_FILE = "onnx_manifest.json"
#: key of the ONNX entry in a model's manifest.json: ``runtimes`` -> ``onnxruntime``
RUNTIME_KEY = "onnxruntime"
OPSET = 18


#: the largest batch the export accepts (views of equal padded size, see runtime batching)
MAX_BATCH = 64


class HeadNetwork(nn.Module):
    """RetinaNet's backbone, FPN and heads: prepared views [N, 1, H, W] -> concatenated head
    outputs ``cls_logits`` [N, HWA, classes] and ``bbox_regression`` [N, HWA, 4].

    The detector's own transform is the identity on prepared inputs (mean 0, std 1, no resize,
    inputs already padded to the stride), so it is left out.
    """

    def __init__(self, network: RetinaNet) -> None:
        super().__init__()
        self.backbone = network.backbone
        self.head = network.head

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = list(self.backbone(image).values())
        out = self.head(features)
        return out["cls_logits"], out["bbox_regression"]


def _fp16_initializers(model: onnx.ModelProto) -> int:
    """Store float32 initializers that round-trip exactly through float16 as float16 + Cast.

    Lossless by construction (values that do not round-trip stay float32); returns how many
    initializers were converted.
    """
    graph = model.graph
    casts = []
    converted = 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values, equal_nan=True):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, f"{name}__fp16"))
        casts.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT,
                                      name=f"{name}__cast"))
        converted += 1
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return converted


def _strip_exporter_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's debugging annotations (FX node names, source stacks, range
    constraints printed from an unordered set), so the same weights and versions give the same
    bytes; the graph itself is untouched."""
    graph = model.graph
    del graph.metadata_props[:]
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        del value.metadata_props[:]
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def export_proto(module: nn.Module, opset: int = OPSET) -> onnx.ModelProto:
    """``module`` (prepared views -> the two head outputs) as an ONNX graph with dynamic batch,
    height and width, stripped of the exporter's debugging annotations."""
    # a batch of 2 in the example: torch.export would specialise a dimension traced at 1
    example = torch.zeros(2, 1, 8 * SIZE_DIVISIBLE, 6 * SIZE_DIVISIBLE)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    blocks_h = torch.export.Dim("blocks_h", min=2, max=1024)
    blocks_w = torch.export.Dim("blocks_w", min=2, max=1024)
    dynamic = {"image": {0: batch, 2: SIZE_DIVISIBLE * blocks_h, 3: SIZE_DIVISIBLE * blocks_w}}
    return _export_proto(module, (example,), [INPUT_NAME], list(OUTPUT_NAMES), dynamic, opset)


def _export_proto(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str],
                  output_names: list[str], dynamic: dict[str, Any], opset: int) -> onnx.ModelProto:
    """The dynamo exporter's graph of ``module`` without exporter metadata (so that the file
    is the same from run to run), unoptimised (optimisation is left to the runtime)."""
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module, example, dynamo=True, opset_version=opset, input_names=input_names,
            output_names=output_names, dynamic_shapes=dynamic, external_data=False,
            optimize=False, verbose=False, artifacts_dir=tmp,
        )
        assert program is not None
        proto = program.model_proto
    _strip_exporter_metadata(proto)
    return proto


def export_onnx(
    model: LockedModel, out_dir: Path, opset: int = OPSET, write_manifest: bool = True
) -> dict[str, Any]:
    """Export ``model`` to ``out_dir/detector.onnx`` and (``write_manifest``) write its entry to
    ``out_dir/onnx_manifest.json``.

    Returns the entry (also what :func:`register_onnx` records in a model manifest).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    proto = export_proto(HeadNetwork(locked_network(model)).eval(), opset)
    converted = _fp16_initializers(proto)
    onnx.checker.check_model(proto)
    path = out_dir / ONNX_FILE
    onnx.save_model(proto, str(path))
    entry = {
        "file": ONNX_FILE,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "source_weights_sha256": model.sha256,
        "model_name": model.name,
        "opset": opset,
        "exporter": "torch.onnx.export (dynamo=True, optimize=False: batch norm unfolded, weights float16-exact)",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "initializers": f"float16 with Cast to float32 ({converted} exactly representable tensors)",
        "inputs": {INPUT_NAME: [f"N (1-{MAX_BATCH})", "1", f"H (multiple of {SIZE_DIVISIBLE})",
                                f"W (multiple of {SIZE_DIVISIBLE})"]},
        "outputs": {"cls_logits": ["N", "HWA", "classes"], "bbox_regression": ["N", "HWA", "4"]},
        "postprocessing": "torchvision RetinaNet anchor_generator, box_coder, postprocess_detections (Python)",
    }
    if write_manifest:
        (out_dir / ONNX_MANIFEST_FILE).write_text(json.dumps(entry, indent=2, sort_keys=True) + "\n")
    return entry


def register_onnx(model_dir: Path, entry: dict[str, Any]) -> None:
    """Record ``entry`` as ``runtimes.onnxruntime`` in the model's manifest.json."""
    register_export(model_dir, RUNTIME_KEY, entry)


RESCORER_ONNX_FILE = "rescorer.onnx"
#: key of the second stage's ONNX entry in a model's manifest.json: ``runtimes`` -> this
RESCORER_RUNTIME_KEY = "onnxruntime_rescorer"
RESCORER_INPUTS = ("patches", "own", "index", "pair", "mask")
RESCORER_OUTPUTS = ("single_logit", "dual_logit")
#: the most candidates of one breast the export accepts (2 views x (20 detections + blobs))
MAX_CANDIDATES = 4096


def export_rescorer_proto(network: DualViewRescorer, opset: int = OPSET) -> onnx.ModelProto:
    """The second stage (one breast's candidates -> two logits each) as an ONNX graph with a
    dynamic number of candidates."""
    k = network.config.counterparts
    example = (torch.zeros(3, 2, PATCH, PATCH), torch.zeros(3, len(OWN_FEATURES)),
               torch.tensor([[1, 2, 0, 0][:k], [0, 2, 1, 0][:k], [0, 1, 0, 0][:k]], dtype=torch.int64),
               torch.zeros(3, k, len(PAIR_FEATURES)), torch.ones(3, k))
    rows = torch.export.Dim("candidates", min=1, max=MAX_CANDIDATES)
    dynamic = {name: {0: rows} for name in RESCORER_INPUTS}
    return _export_proto(network.eval(), example, list(RESCORER_INPUTS), list(RESCORER_OUTPUTS), dynamic, opset)


def export_rescorer(model: LockedModel, out_dir: Path, opset: int = OPSET) -> dict[str, Any]:
    """Export ``model``'s second stage to ``out_dir/rescorer.onnx``; returns its manifest entry."""
    rescorer = locked_rescorer(model)
    if rescorer is None:
        raise ValueError(f"{model.path}: the model has no second stage to export")
    out_dir.mkdir(parents=True, exist_ok=True)
    proto = export_rescorer_proto(rescorer, opset)
    converted = _fp16_initializers(proto)
    onnx.checker.check_model(proto)
    path = out_dir / RESCORER_ONNX_FILE
    onnx.save_model(proto, str(path))
    return {
        "file": RESCORER_ONNX_FILE,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "source_weights_sha256": model.sha256,
        "model_name": model.name,
        "opset": opset,
        "exporter": "torch.onnx.export (dynamo=True, optimize=False, weights float16-exact)",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "initializers": f"float16 with Cast to float32 ({converted} exactly representable tensors)",
        "inputs": {"patches": [f"M (1-{MAX_CANDIDATES})", "2", str(PATCH), str(PATCH)],
                   "own": ["M", str(len(OWN_FEATURES))], "index": ["M", "K"],
                   "pair": ["M", "K", str(len(PAIR_FEATURES))], "mask": ["M", "K"]},
        "outputs": {"single_logit": ["M"], "dual_logit": ["M"]},
    }
