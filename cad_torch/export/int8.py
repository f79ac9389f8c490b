"""The int8 variant of the ONNX export: static quantisation with ONNX Runtime's own tools.

Steps: the float32 export's float16 initializers (stored with a Cast to float32) are folded
into float32 initializers, so the quantiser sees every convolution's weights; ONNX Runtime's
``quant_pre_process`` folds the frozen batch-norm multiplications into the convolutions; then
``quantize_static`` writes a QDQ graph with per-channel int8 weights and uint8 activations
whose ranges are calibrated (MinMax) on prepared views of validation phantoms only, never on the
test sets. The result is a runtime variant of the locked model: its own file and SHA-256 under
``runtimes.onnxruntime_int8`` in the manifest, with the calibration it was built from, made from
the same locked weights; results it produces name the variant.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from cad.detect.inputs import prepare_view
from cad.detect.locked import LockedModel, register_export, sha256_file, verified_export
from cad.detect.postprocess import INPUT_NAME
from cad.detect.runtime import ONNX_EXPORT, ONNX_INT8_EXPORT
from cad.io import load
from cad.preprocess.mask import NoBreastError

INT8_FILE = "detector-int8.onnx"
#: prepared views the activation ranges are calibrated on (at most)
CALIBRATION_VIEWS = 48


def _fold_casts(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 initializers behind a Cast become float32 initializers (same values)."""
    initializers = {i.name: i for i in proto.graph.initializer}
    kept = []
    for node in proto.graph.node:
        if node.op_type == "Cast" and node.input[0] in initializers:
            value = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32)
            proto.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        else:
            kept.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    used = {name for node in proto.graph.node for name in node.input}
    live = [i for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(live)
    return proto


def calibration_views(model: LockedModel, folder: Path, limit: int = CALIBRATION_VIEWS) -> list[np.ndarray]:
    """Prepared float32 inputs [1, 1, H, W] of the first ``limit`` analysable images in ``folder``."""
    views = []
    for image in load([folder]).images:
        try:
            views.append(prepare_view(image, model.config).array.astype(np.float32)[None, None])
        except NoBreastError:
            continue
        if len(views) == limit:
            break
    return views


def export_int8(model: LockedModel, out_dir: Path, calibration: Path) -> dict[str, Any]:
    """Quantise the verified ONNX export of ``model`` into ``out_dir``; returns its manifest
    entry (registered when ``out_dir`` is the model folder). ValueError when the calibration
    folder holds no analysable image."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw, entry, _ = verified_export(model, ONNX_EXPORT)
    views = calibration_views(model, calibration)
    if not views:
        raise ValueError(f"{calibration}: no analysable MG image to calibrate on")

    class Views(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.remaining = iter([{INPUT_NAME: v} for v in views])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.remaining, None)

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / INT8_FILE
    with tempfile.TemporaryDirectory() as tmp:
        folded, prepared = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        onnx.save(_fold_casts(onnx.load_from_string(raw)), str(folded))
        quant_pre_process(str(folded), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), Views(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    int8 = {
        "file": INT8_FILE, "sha256": sha256_file(target), "bytes": target.stat().st_size,
        "source_weights_sha256": model.sha256, "source_onnx_sha256": entry["sha256"],
        "quantisation": "static QDQ, per-channel int8 weights, uint8 activations (MinMax calibration), "
                        "ONNX Runtime quant_pre_process + quantize_static",
        "calibration": {"folder": calibration.name, "views": len(views),
                        "note": "validation phantoms only (never a test set)"},
    }
    if out_dir.resolve() == model.path.resolve():
        register_export(model.path, ONNX_INT8_EXPORT.key, int8)
    return int8
