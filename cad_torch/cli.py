"""The verb the torch side adds to the `cad` command: `cad export` (ONNX, its int8 variant, a
TensorRT engine on a GPU host). Registered through the ``cad.commands`` entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cad.cli import EXIT_USAGE, ModelOption, console, err, output_folder_option, verified_model
from cad_torch.plugins import torch_unavailable


def register(app: typer.Typer) -> None:
    """Add `cad export` to ``app``."""
    app.command("export")(export)


def export(
    out: Annotated[Path, output_folder_option("Output folder (the model folder registers the export).")],
    export_format: Annotated[str, typer.Option(
        "--format", help="onnx, onnx-int8 (its int8 variant), or tensorrt (on a CUDA GPU).")] = "onnx",
    model: ModelOption = None,
    parity_input: Annotated[Path | None, typer.Option(
        "--parity-input",
        help="tensorrt: this site's own DICOM mammograms for the parity check against ONNX Runtime (required).")] = None,
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="onnx-int8: validation MG images (never test data) to calibrate on (required).")] = None,
) -> None:
    """Export the locked detector's backbone, FPN and heads: ONNX (float32 compute, float16-exact
    weights), or a TensorRT FP16 engine built from it on this GPU after a parity check against
    ONNX Runtime. Postprocessing stays the shared numpy code. Needs the torch side (mammo-cad-torch).

    When --out is the model folder itself, the export is recorded in its manifest.json
    (runtimes.onnxruntime / runtimes.tensorrt), which is what `cad detect --runtime` verifies and
    runs; otherwise a separate manifest is written beside the export."""
    if export_format not in {"onnx", "onnx-int8", "tensorrt"}:
        err.print(f"error: --format {export_format}: use onnx, onnx-int8 or tensorrt")
        raise typer.Exit(EXIT_USAGE)
    unavailable = torch_unavailable()
    if unavailable is not None:
        err.print(f"error: cad export makes the exports from the PyTorch weights: {unavailable}")
        raise typer.Exit(EXIT_USAGE)
    from cad_torch.export import export_model

    locked = verified_model(model, released_only=False)  # exports are made of models before their release
    console.print(export_model(locked, out, export_format, parity_input, calibration))
