"""The locked model: weights verified against their manifest before any use.

A model folder holds ``weights.safetensors`` (float16), ``manifest.json`` (SHA-256 of the
weights, detector configuration, operating point, training-data description and hash,
measured metrics) and ``MODEL_CARD.md``. Loading recomputes the SHA-256 and refuses a
mismatch, so the model that runs is byte for byte the model that was verified.

Torch-free: a site verifies the weights here and runs their verified ONNX export; the PyTorch
network and second stage are built from the same verified bytes only when asked for
(:func:`cad_torch.network.locked_network`, the torch side).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, deserialize

from cad.detect.config import DetectorConfig
from cad.detect.linking import LinkingConfig
from cad.detect.manifest import (
    MANIFEST_FILE,
    RESCORER_KEY,
    RUNTIMES_KEY,
    WEIGHTS_FILE,
    ManifestError,
    ModelManifest,
    read_manifest_file,
)
from cad.detect.rescore import RescoreSettings
from cad.errors import ModelError

__all__ = ["DEFAULT_MODEL_DIR", "MANIFEST_FILE", "MODEL_ENV", "RESCORER_PREFIX", "WEIGHTS_FILE", "ExportKind",
           "LockedModel", "ModelIntegrityError", "default_model_dir", "load_locked_model", "read_manifest",
           "register_export", "sha256_file", "verified_export"]

#: the prefix of the second stage's tensors in the weights file
RESCORER_PREFIX = "rescorer."
#: the model released with this software, in a source checkout (or an editable install)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "phantom-retinanet-r18"
#: the same model where `pip install` puts it: the site package carries it as data files
#: (pyproject.toml, tool.setuptools.data-files)
INSTALLED_MODEL_DIR = Path(sys.prefix) / "share" / "mammo-cad" / "models" / DEFAULT_MODEL_DIR.name
MODEL_ENV = "CAD_MODEL_DIR"


class ModelIntegrityError(ModelError, RuntimeError):
    """The model folder is missing, malformed, or its weights do not match the manifest."""


@dataclass(frozen=True, eq=False)
class LockedModel:
    """A verified locked model with the facts every result must carry."""

    config: DetectorConfig
    sha256: str
    manifest: ModelManifest
    path: Path
    #: SHA-256 of the canonical JSON of every setting that changes the output besides the
    #: weights (detector limits, second stage, linking, operating point): reported with every result
    settings_sha256: str = ""
    #: the second stage's settings, None for a one-stage model
    rescore_settings: RescoreSettings | None = None
    #: the verified weights file (safetensors bytes): what the PyTorch modules are built from
    weights: bytes = field(default=b"", repr=False, compare=False)

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
    """The model folder used without --model: CAD_MODEL_DIR, else the released model of a
    source checkout, else the one installed with the package."""
    if os.environ.get(MODEL_ENV):
        return Path(os.environ[MODEL_ENV])
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / MANIFEST_FILE).is_file() else INSTALLED_MODEL_DIR


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
    if not (model_dir / MANIFEST_FILE).is_file():
        how = "name the locked model folder with --model DIR or the CAD_MODEL_DIR environment variable"
        raise ModelIntegrityError(f"{model_dir}: no locked model here ({MANIFEST_FILE} not found); {how}")
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
    try:
        names = {name for name, _ in deserialize(raw)}  # type: ignore[no-untyped-call]  # safetensors ships no hints for it
    except (SafetensorError, ValueError) as exc:
        raise ModelIntegrityError(f"{weights}: not a safetensors weights file ({str(exc).splitlines()[0][:160]})") from None
    if manifest.rescorer is None and any(n.startswith(RESCORER_PREFIX) for n in names):
        raise ModelIntegrityError(f"{model_dir}: model does not load (the weights hold a second stage that the "
                                  f"manifest does not describe ({RESCORER_KEY}))")
    return LockedModel(manifest.detector, digest, manifest, model_dir, manifest.settings_sha256(), manifest.rescorer,
                       raw)


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
    if entry is None or not required <= set(entry.raw):
        raise ModelIntegrityError(f"{model.path}: the model manifest names no {kind.missing} "
                                  f"({RUNTIMES_KEY}.{kind.key}); {kind.remedy}")
    path = model.path / entry.file
    if not path.is_file():
        raise ModelIntegrityError(f"{path}: {kind.label} not found")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != entry.sha256:
        raise ModelIntegrityError(
            f"{path}: {kind.label} does not match the manifest (SHA-256 {digest[:16]}…, manifest says "
            f"{entry.sha256[:16]}…); refusing to run a model that is not the locked one"
        )
    if entry.source_weights_sha256 != model.sha256:
        raise ModelIntegrityError(
            f"{path}: {kind.label} was {kind.source_verb} from other weights (SHA-256 "
            f"{entry.source_weights_sha256[:16]}…, locked weights {model.sha256[:16]}…)"
        )
    return raw, dict(entry.raw), path


def register_export(model_dir: Path, key: str, entry: dict[str, Any]) -> None:
    """Record a runtime export as ``runtimes.<key>`` in the model's manifest.json, keeping its
    formatting (sorted keys, indent 2); the settings hash does not depend on this key."""
    path = model_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.setdefault(RUNTIMES_KEY, {})[key] = entry
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
