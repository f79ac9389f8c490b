"""Exports of the locked model for the runtimes a site runs: ONNX (:mod:`cad_torch.export.onnx`), its
int8 variant (:mod:`cad_torch.export.int8`) and a TensorRT engine built on the site's GPU
(:mod:`cad_torch.export.tensorrt`).

A runtime only verifies and runs what an export registered in the model manifest; the device
never imports this package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cad.detect.locked import LockedModel, register_export
from cad.errors import CadError, ExitCode
from cad_torch.plugins import tensorrt_unavailable


class ExportError(CadError, RuntimeError):
    """An export that cannot be made; ``exit_code`` is the command line's (2 usage, 1 failed)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = ExitCode(exit_code)


def export_model(model: LockedModel, out: Path, export_format: str, parity_input: Path | None = None,
                 calibration: Path | None = None) -> str:
    """Export ``model`` to ``out`` (``onnx`` or ``tensorrt``); when ``out`` is the model folder,
    register the export in its manifest. Returns one line saying what was written."""
    registered = out.resolve() == model.path.resolve()
    if export_format == "onnx":
        entry, detail = _export_onnx(model, out, registered)
    elif export_format == "tensorrt":
        entry, detail = _export_tensorrt(model, out, parity_input)
    elif export_format == "onnx-int8":
        entry, detail = _export_int8(model, out, calibration)
    else:
        raise ExportError(f"--format {export_format}: use onnx, onnx-int8 or tensorrt", 2)
    return (f"wrote {out / entry['file']} ({entry['bytes'] / 1e6:.1f} MB, {detail}, SHA-256 {entry['sha256'][:12]}) "
            f"from weights {model.sha256[:12]}" + (f"; recorded in {model.path / 'manifest.json'}" if registered else ""))


def _export_onnx(model: LockedModel, out: Path, registered: bool) -> tuple[dict[str, Any], str]:
    from cad_torch.export.onnx import RESCORER_RUNTIME_KEY, export_onnx, export_rescorer, register_onnx

    entry = export_onnx(model, out, write_manifest=not registered)
    if registered:
        register_onnx(model.path, entry)
    detail = f"opset {entry['opset']}"
    if model.rescore_settings is not None:
        second = export_rescorer(model, out)
        if registered:
            register_export(model.path, RESCORER_RUNTIME_KEY, second)
        else:
            (out / "onnx_rescorer_manifest.json").write_text(json.dumps(second, indent=2, sort_keys=True) + "\n")
        detail += f"; second stage {second['file']} ({second['bytes'] / 1e3:.0f} kB, SHA-256 {second['sha256'][:12]})"
    return entry, detail


def _export_tensorrt(model: LockedModel, out: Path, parity_input: Path | None) -> tuple[dict[str, Any], str]:
    """Build and parity-check the engine on the site's own images (no phantom generator on a
    site: the parity set is what this site analyses)."""
    unavailable = tensorrt_unavailable()
    if unavailable is not None:
        raise ExportError(f"--format tensorrt: {unavailable}", 2)
    if parity_input is None:
        raise ExportError("--format tensorrt needs --parity-input: a folder of this site's MG images "
                          "(a few exams) to compare the engine with ONNX Runtime", 2)
    from cad.detect.inputs import prepare_view
    from cad.io import load
    from cad.preprocess.mask import NoBreastError
    from cad_torch.export.tensorrt import export_tensorrt

    if not parity_input.exists():
        raise ExportError(f"{parity_input}: no such file or folder", 2)
    views = []
    for image in load([parity_input]).images:
        try:
            views.append(prepare_view(image, model.config))
        except NoBreastError:
            continue  # not every site image has a breast outline the geometry finds
    if not views:
        raise ExportError(f"{parity_input}: no analysable MG image for the parity check", 2)
    try:
        entry = export_tensorrt(model, out, views)
    except RuntimeError as exc:
        raise ExportError(str(exc), 1) from None
    parity = entry["parity_vs_onnxruntime"]
    detail = (f"{entry['gpu']}, TensorRT {entry['tensorrt']}; parity with ONNX Runtime on {parity['views']} views: "
              f"max score difference {parity['max_score_difference']}, min IoU {parity['min_iou']}")
    return entry, detail


def _export_int8(model: LockedModel, out: Path, calibration: Path | None) -> tuple[dict[str, Any], str]:
    """The int8 variant, calibrated on ``calibration`` (validation images, never a test set)."""
    if calibration is None:
        raise ExportError("--format onnx-int8 needs --calibration: a folder of validation MG images "
                          "(never the test set) to calibrate the activation ranges on", 2)
    if not calibration.exists():
        raise ExportError(f"{calibration}: no such file or folder", 2)
    from cad_torch.export.int8 import export_int8

    try:
        entry = export_int8(model, out, calibration)
    except ValueError as exc:
        raise ExportError(str(exc), 2) from None
    return entry, f"int8 QDQ, calibrated on {entry['calibration']['views']} views of {calibration.name}"
