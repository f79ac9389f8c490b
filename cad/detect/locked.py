"""The locked model: weights verified against their manifest before any use.

A model folder holds ``weights.safetensors`` (float16), ``manifest.json`` (SHA-256 of the
weights, detector configuration, operating point, training-data description and hash,
measured metrics) and ``MODEL_CARD.md``. Loading recomputes the SHA-256 and refuses a
mismatch, so the model that runs is byte for byte the model that was verified.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torchvision.models.detection import RetinaNet

import cad
from cad.detect.config import DetectorConfig
from cad.detect.linking import LinkingConfig
from cad.detect.manifest import (
    MANIFEST_FILE,
    MANIFEST_VERSION,
    RESCORER_KEY,
    RUNTIMES_KEY,
    WEIGHTS_FILE,
    ManifestError,
    ModelManifest,
    read_manifest_file,
)
from cad.detect.model import build_detector
from cad.detect.rescore import RescoreSettings
from cad.detect.rescore_model import DualViewRescorer

#: the prefix of the second stage's tensors in the weights file
RESCORER_PREFIX = "rescorer."
#: the model shipped with this release (an editable install or a source checkout)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "phantom-retinanet-r18"
MODEL_ENV = "CAD_MODEL_DIR"


class ModelIntegrityError(RuntimeError):
    """The model folder is missing, malformed, or its weights do not match the manifest."""


@dataclass(frozen=True)
class LockedModel:
    """A verified, ready-to-run detector with the facts every result must carry."""

    network: RetinaNet
    config: DetectorConfig
    sha256: str
    manifest: ModelManifest
    path: Path
    #: SHA-256 of the canonical JSON of every setting that changes the output besides the
    #: weights (detector limits, second stage, linking, operating point): reported with every result
    settings_sha256: str = ""
    #: the second stage (dual-view rescoring of the candidates), None for a one-stage model
    rescorer: DualViewRescorer | None = None
    rescore_settings: RescoreSettings | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def operating_threshold(self) -> float:
        return self.manifest.threshold

    @property
    def linking(self) -> LinkingConfig:
        return self.manifest.linking


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_model_dir() -> Path:
    return Path(os.environ.get(MODEL_ENV) or DEFAULT_MODEL_DIR)


def read_manifest(model_dir: Path, calibrated: bool = True) -> ModelManifest:
    """The typed manifest of ``model_dir`` (:mod:`cad.detect.manifest`); ``calibrated=False`` also
    accepts a training run's model whose operating point is not set yet (development tooling
    only: nothing at a site loads one). Problems are ModelIntegrityError naming the file."""
    try:
        return read_manifest_file(model_dir, calibrated)
    except ManifestError as exc:
        raise ModelIntegrityError(str(exc)) from None


def load_locked_model(model_dir: Path | None = None, calibrated: bool = True) -> LockedModel:
    """Verify and load a locked model (default: the released phantom model); ``calibrated=False``
    for a training run's uncalibrated model (see :func:`read_manifest`).

    The weights are read once; the bytes that are hashed are the bytes that are loaded.
    """
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    manifest = read_manifest(model_dir, calibrated)
    weights = model_dir / manifest.weights.file
    if not weights.is_file():
        raise ModelIntegrityError(f"{weights}: model weights not found")
    raw = weights.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    expected = manifest.weights.sha256
    if digest != expected:
        raise ModelIntegrityError(
            f"{weights}: weights do not match the manifest (SHA-256 {digest[:16]}…, manifest "
            f"says {expected[:16]}…); refusing to run a model that is not the locked one"
        )
    rescorer = None
    config, settings = manifest.detector, manifest.rescorer
    try:
        network = build_detector(config)
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_safetensors(raw).items()}
        second = {k[len(RESCORER_PREFIX):]: v for k, v in state.items() if k.startswith(RESCORER_PREFIX)}
        network.load_state_dict({k: v for k, v in state.items() if not k.startswith(RESCORER_PREFIX)}, strict=True)
        if settings is not None:
            rescorer = DualViewRescorer(settings.network)
            rescorer.load_state_dict(second, strict=True)
            rescorer.eval()
        elif second:
            raise ValueError(f"the weights hold a second stage that the manifest does not describe ({RESCORER_KEY})")
    except (ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ModelIntegrityError(
            f"{model_dir}: model does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None
    network.eval()
    return LockedModel(network, config, digest, manifest, model_dir, manifest.settings_sha256(), rescorer, settings)


def write_locked_model(
    out_dir: Path,
    network: torch.nn.Module,
    config: DetectorConfig,
    name: str,
    operating_point: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, Any],
    rescorer: tuple[DualViewRescorer, RescoreSettings] | None = None,
) -> Path:
    """Write weights (float16 safetensors; a second stage's under ``rescorer.``, in the same
    file and so under the same hash) and a manifest naming their SHA-256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = dict(network.state_dict())
    if rescorer is not None:
        tensors.update({RESCORER_PREFIX + k: v for k, v in rescorer[0].state_dict().items()})
    state = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in tensors.items()
    }
    weights = out_dir / WEIGHTS_FILE
    save_file(state, str(weights), metadata={"name": name, "dtype": "float16"})
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "algorithm": {"name": cad.ALGORITHM_NAME, "version": cad.__version__},
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(weights),
                    "bytes": weights.stat().st_size, "dtype": "float16"},
        "detector": config.to_dict(),
        "operating_point": operating_point,
        "training": training,
        "metrics": metrics,
    }
    if rescorer is not None:
        manifest[RESCORER_KEY] = rescorer[1].to_dict()
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out_dir


@dataclass(frozen=True)
class ExportKind:
    """How one kind of runtime export is recorded in the manifest and named in errors."""

    key: str  # under ``runtimes``: "onnxruntime", "tensorrt"
    label: str  # the file in messages: "ONNX model", "TensorRT engine"
    missing: str  # what a manifest without the entry lacks: "ONNX export", "TensorRT engine"
    source_verb: str  # how it was made from the weights: "exported", "built"
    remedy: str  # what to do when the manifest names none


def verified_export(
    model: LockedModel, kind: ExportKind, required: frozenset[str] = frozenset()
) -> tuple[bytes, dict[str, Any], Path]:
    """A runtime export of ``model`` read once and checked against the manifest: its SHA-256, and
    that it was made from the locked weights. The bytes that are hashed are the bytes returned
    (to be loaded); every problem is a ModelIntegrityError naming the file."""
    entry = model.manifest.runtimes.get(kind.key)
    if not isinstance(entry, dict) or not {"file", "sha256", "source_weights_sha256", *required} <= set(entry):
        raise ModelIntegrityError(f"{model.path}: the model manifest names no {kind.missing} "
                                  f"({RUNTIMES_KEY}.{kind.key}); {kind.remedy}")
    path = model.path / str(entry["file"])
    if not path.is_file():
        raise ModelIntegrityError(f"{path}: {kind.label} not found")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    expected = str(entry["sha256"]).lower()
    if digest != expected:
        raise ModelIntegrityError(
            f"{path}: {kind.label} does not match the manifest (SHA-256 {digest[:16]}…, manifest says "
            f"{expected[:16]}…); refusing to run a model that is not the locked one"
        )
    if str(entry["source_weights_sha256"]).lower() != model.sha256:
        raise ModelIntegrityError(
            f"{path}: {kind.label} was {kind.source_verb} from other weights (SHA-256 "
            f"{str(entry['source_weights_sha256'])[:16]}…, locked weights {model.sha256[:16]}…)"
        )
    return raw, entry, path


def register_export(model_dir: Path, key: str, entry: dict[str, Any]) -> None:
    """Record a runtime export as ``runtimes.<key>`` in the model's manifest.json, keeping its
    formatting (sorted keys, indent 2); the settings hash does not depend on this key."""
    path = model_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.setdefault(RUNTIMES_KEY, {})[key] = entry
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
