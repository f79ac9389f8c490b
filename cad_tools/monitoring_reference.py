"""Compute the monitoring reference of a locked model on its validation exams (manufacturer's
tooling; the service only reads and verifies the result, :mod:`cad.service.reference`).

The exams are analysed exactly as a site analyses them (ingest, the locked model on ONNX Runtime,
the same output and input facts the service records per study and image); the per-study output
facts and per-image input facts become the reference, written beside the model and named with
its SHA-256 in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cad.analysis.pipeline import analyse_studies
from cad.detect.locked import LockedModel
from cad.detect.runtime import make_runtime
from cad.io import load
from cad.service import drift, input_drift, reference


def compute_reference(model: LockedModel, data: Path, exams_per_batch: int = 4) -> dict[str, Any]:
    """The reference's content from every study under ``data`` (images that cannot be analysed
    count in the not-analysed fraction, as at a site)."""
    runtime = make_runtime(model)
    # one exam folder at a time (the validation set is hundreds of exams; memory stays bounded)
    folders = sorted(p for p in data.iterdir() if p.is_dir()) or [data]
    outputs: list[drift.OutputFacts] = []
    images: list[dict[str, float | None]] = []
    devices: set[str] = set()
    for start in range(0, len(folders), exams_per_batch):
        group = load(folders[start:start + exams_per_batch]).studies
        for result, views in analyse_studies(group, model, runtime):
            outputs.append(drift.OutputFacts.of(result, 0.0))  # processing time is not part of the reference
            images.extend(input_drift.image_facts(view) for view in views)
            devices.update(input_drift.device_of(view.image.header) for view in views)
    source = f"{data.name}: {len(outputs)} validation studies analysed with {model.name} ({model.sha256[:12]})"
    return reference.build_reference(outputs, images, source, sorted(devices))


def write_for_model(model: LockedModel, data: Path) -> dict[str, Any]:
    """Compute the reference and record it beside ``model`` (its manifest entry is returned)."""
    return reference.write_reference(model.path, compute_reference(model, data))
