"""The monitoring reference shipped beside a locked model: what its outputs and inputs look like
on the model's validation set.

The drift checks of `cad serve` need something to compare a site's recent studies with. With
``reference = "model"`` (the default, :mod:`cad.service.settings`) it is this file, computed by
the manufacturer on the validation exams with the released model (`cad monitoring-reference`),
named with its SHA-256 in the model's manifest (``monitoring``) and verified like the weights:
a changed file stops the service at start. It holds per output fact the per-study mean and
standard deviation (processing time excluded: it depends on the site's machine, so it is always
judged against the site's own first studies), and per input fact a sample of the validation
images' values for the two-sample KS test. A fact the validation images do not record (a header
value the phantom lacks) is judged against the site's own baseline instead.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cad.detect.locked import LockedModel, ModelIntegrityError
from cad.detect.manifest import MANIFEST_FILE, MONITORING_KEY
from cad.service import drift, input_drift

REFERENCE_FILE = "monitoring-reference.json"
REFERENCE_VERSION = "1.0"
#: output facts a validation machine cannot speak for
SITE_ONLY_FACTS = frozenset({"seconds"})


@dataclass(frozen=True)
class MonitoringReference:
    """The validation set's output and input facts (see the module's docstring)."""

    source: str
    studies: int
    images: int
    output: Mapping[str, drift.Reference]
    inputs: Mapping[str, tuple[float, ...]]
    sha256: str = ""
    #: acquisition devices of the validation images: not "new" at a site
    devices: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        return {"source": self.source, "studies": self.studies, "images": self.images, "sha256": self.sha256,
                "output_facts": sorted(self.output), "input_facts": sorted(self.inputs), "devices": list(self.devices)}


def build_reference(outputs: Sequence[drift.OutputFacts], images: Sequence[Mapping[str, float | None]],
                    source: str, devices: Sequence[str] = ()) -> dict[str, Any]:
    """The reference file's content from the validation set's per-study output facts and
    per-image input facts (output facts without spread, and input facts with fewer than 20
    values, are left out)."""
    output: dict[str, dict[str, float]] = {}
    for name in drift.FACTS:
        if name in SITE_ONLY_FACTS:
            continue
        reference = drift.reference_of([getattr(f, name) for f in outputs])
        if reference is not None:
            output[name] = {"mean": round(reference.mean, 6), "sd": round(reference.sd, 6)}
    inputs: dict[str, list[float]] = {}
    for name in input_drift.FACTS:
        values = sorted(float(v) for i in images if (v := i.get(name)) is not None and math.isfinite(float(v)))
        if len(values) >= 20:  # a constant fact (one pixel spacing) is a valid reference for the KS test
            inputs[name] = [round(v, 6) for v in values]
    return {"reference_version": REFERENCE_VERSION, "source": source, "studies": len(outputs), "images": len(images),
            "output": output, "inputs": inputs, "devices": sorted(set(devices))}


def parse_reference(data: Any, where: str, sha256: str = "") -> MonitoringReference:
    """The typed reference of a file's JSON; ValueError naming ``where`` otherwise."""
    try:
        if data["reference_version"] != REFERENCE_VERSION:
            raise ValueError(f"reference_version {data['reference_version']} (this version reads {REFERENCE_VERSION})")
        output = {str(k): drift.Reference(float(v["mean"]), float(v["sd"])) for k, v in data["output"].items()
                  if k in drift.FACTS}
        inputs = {str(k): tuple(float(x) for x in v) for k, v in data["inputs"].items() if k in input_drift.FACTS}
        return MonitoringReference(str(data["source"]), int(data["studies"]), int(data["images"]), output, inputs,
                                   sha256, tuple(str(d) for d in data.get("devices", ())))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where}: not a monitoring reference ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def load_reference(model: LockedModel) -> MonitoringReference | None:
    """The verified reference named in ``model``'s manifest (None when the model ships none);
    ModelIntegrityError when the file is missing, changed or unreadable."""
    entry = model.manifest.raw.get(MONITORING_KEY)
    if entry is None:
        return None
    path = model.path / str(entry.get("file", REFERENCE_FILE))
    try:
        raw = path.read_bytes()
    except OSError:
        raise ModelIntegrityError(f"{path}: the monitoring reference named in the manifest is missing") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != str(entry.get("sha256", "")).lower():
        raise ModelIntegrityError(f"{path}: monitoring reference does not match the manifest (SHA-256 {digest[:16]}…, "
                                  f"manifest says {str(entry.get('sha256', ''))[:16]}…)")
    try:
        return parse_reference(json.loads(raw), str(path), digest)
    except ValueError as exc:
        raise ModelIntegrityError(str(exc)) from None


def write_reference(model_dir: Path, content: Mapping[str, Any]) -> dict[str, Any]:
    """Write the reference beside the model and name it with its SHA-256 in the manifest
    (the settings hash does not depend on this key: the reference changes no output)."""
    path = model_dir / REFERENCE_FILE
    raw = (json.dumps(content, indent=1, sort_keys=True) + "\n").encode()
    path.write_bytes(raw)
    entry = {"file": REFERENCE_FILE, "sha256": hashlib.sha256(raw).hexdigest(), "source": content["source"],
             "studies": content["studies"], "images": content["images"]}
    manifest_path = model_dir / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest[MONITORING_KEY] = entry
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return entry
