"""The model manifest (manifest.json of a locked model folder), parsed and validated once.

Every key is known: an unknown or misspelt key anywhere the device reads settings is refused
(a setting that silently fell back to its default would still look recorded). ``training`` and
``metrics`` are the model's descriptive record (data, recipe, measured figures): kept as read,
never used to compute a result.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cad.detect.config import DetectorConfig
from cad.detect.correspondence import CorrespondenceModel
from cad.detect.linking import LinkingConfig
from cad.detect.rescore import RescoreSettings
from cad.errors import ModelError

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = "1.0"
WEIGHTS_FILE = "weights.safetensors"
#: manifest key of the second stage's settings
RESCORER_KEY = "rescorer"
#: manifest key under which each runtime export of the weights is recorded
RUNTIMES_KEY = "runtimes"
#: the monitoring reference beside the model (cad.service.reference): named and hashed here, read by the service
MONITORING_KEY = "monitoring"
#: manifest key of the learned CC/MLO correspondence (cad.detect.correspondence); without it,
#: linking is the hand-set cost of ``linking``
CORRESPONDENCE_KEY = "correspondence"
TOP_LEVEL_KEYS = frozenset({"manifest_version", "name", "algorithm", "weights", "detector", "linking",
                            "operating_point", "training", "metrics", RESCORER_KEY, RUNTIMES_KEY, MONITORING_KEY,
                            CORRESPONDENCE_KEY})
#: keys every runtime export entry has (each runtime adds its own facts: opset, GPU, parity, ...)
EXPORT_REQUIRED_KEYS = frozenset({"file", "sha256", "source_weights_sha256"})


class ManifestError(ModelError, ValueError):
    """A manifest that is not one this version reads."""


def known_keys(section: str, data: Any, known: Collection[str], required: Collection[str] = (),
               error: type[ValueError] = ManifestError) -> dict[str, Any]:
    """``data`` when it is a mapping holding every ``required`` key and no key outside ``known``;
    ``error`` naming the section and the keys otherwise (also used for the change protocol)."""
    if not isinstance(data, dict):
        raise error(f"{section}: expected an object, not {type(data).__name__}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise error(f"{section}: unknown key(s) {', '.join(unknown)}")
    missing = sorted(set(required) - set(data))
    if missing:
        raise error(f"{section}: missing key(s) {', '.join(missing)}")
    return data


@dataclass(frozen=True)
class WeightsEntry:
    file: str
    sha256: str
    bytes: int | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class OperatingPoint:
    """The locked threshold (None only in a training run's model before calibration)."""

    threshold: float | None
    fpi: float | None = None
    definition: str | None = None
    validation: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class VariantAcceptance:
    """The change protocol's verdict on a runtime variant, recorded beside its export (`cad
    release compare`): a variant runs at a site only when accepted."""

    verdict: str
    protocol: str | None = None
    record: str | None = None

    @property
    def accepted(self) -> bool:
        return self.verdict == "accepted"


@dataclass(frozen=True)
class RuntimeEntry:
    """One runtime export recorded under ``runtimes.<key>``: the file, its SHA-256 and the weights
    it was made from (what every runtime verifies before use), the variant's acceptance where one
    was recorded, and the entry as written (opset, versions, GPU, parity: descriptive)."""

    file: str
    sha256: str
    source_weights_sha256: str
    acceptance: VariantAcceptance | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, key: str, data: Any) -> RuntimeEntry:
        """The typed entry of ``runtimes.<key>``; ManifestError naming the key otherwise."""
        if not isinstance(data, dict) or not EXPORT_REQUIRED_KEYS <= set(data):
            raise ManifestError(f"{RUNTIMES_KEY}.{key}: an export entry names {', '.join(sorted(EXPORT_REQUIRED_KEYS))}")
        acceptance = data.get("acceptance")
        if acceptance is not None and not (isinstance(acceptance, dict) and "verdict" in acceptance):
            raise ManifestError(f"{RUNTIMES_KEY}.{key}.acceptance: names no verdict")
        return cls(
            str(data["file"]), str(data["sha256"]).lower(), str(data["source_weights_sha256"]).lower(),
            None if acceptance is None else VariantAcceptance(
                str(acceptance["verdict"]),
                None if acceptance.get("protocol") is None else str(acceptance["protocol"]),
                None if acceptance.get("record") is None else str(acceptance["record"])),
            dict(data))


@dataclass(frozen=True)
class ModelManifest:
    manifest_version: str
    name: str
    algorithm: Mapping[str, str]
    weights: WeightsEntry
    detector: DetectorConfig
    linking: LinkingConfig
    operating_point: OperatingPoint
    rescorer: RescoreSettings | None = None
    correspondence: CorrespondenceModel | None = None
    runtimes: Mapping[str, RuntimeEntry] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    #: the manifest as read (hashing the settings, and re-writing with an export registered)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def threshold(self) -> float:
        """The locked operating threshold (ManifestError for an uncalibrated model)."""
        if self.operating_point.threshold is None:
            raise ManifestError("operating_point.threshold: not calibrated")
        return self.operating_point.threshold

    def settings_sha256(self) -> str:
        """SHA-256 of the output-changing settings besides the weights, as canonical JSON (a model
        without a second stage hashes as it did before there was one)."""
        raw = self.raw
        settings = {k: raw.get(k) for k in ("detector", "linking", "operating_point")}
        for key in (RESCORER_KEY, CORRESPONDENCE_KEY):  # a model without one hashes as before there was one
            if key in raw:
                settings[key] = raw[key]
        settings["operating_point"] = {"threshold": raw["operating_point"]["threshold"]}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def with_export(self, key: str, entry: Mapping[str, Any]) -> ModelManifest:
        """This manifest with ``runtimes.<key>`` set to ``entry`` (the settings hash is unchanged)."""
        runtimes = {**self.runtimes, key: RuntimeEntry.from_dict(key, dict(entry))}
        return replace(self, runtimes=runtimes,
                       raw={**self.raw, RUNTIMES_KEY: {k: dict(v.raw) for k, v in runtimes.items()}})


def parse_manifest(data: Any, calibrated: bool = True) -> ModelManifest:
    """The typed manifest of ``data`` (manifest.json's object); ManifestError naming the key
    otherwise. ``calibrated=False`` accepts a training run's model with no threshold yet."""
    try:
        top = known_keys("manifest", data, TOP_LEVEL_KEYS, frozenset({"name", "weights", "detector", "operating_point"}))
        version = str(top.get("manifest_version", MANIFEST_VERSION))
        if version != MANIFEST_VERSION:
            raise ManifestError(f"manifest_version {version} (this version reads {MANIFEST_VERSION})")
        weights = known_keys("weights", top["weights"], frozenset({"file", "sha256", "bytes", "dtype"}),
                         frozenset({"sha256"}))
        point = known_keys("operating_point", top["operating_point"],
                       frozenset({"threshold", "fpi", "definition", "validation"}), frozenset({"threshold"}))
        threshold = point["threshold"]
        if threshold is None and calibrated:
            raise ManifestError("operating_point.threshold: not calibrated")
        if threshold is not None:
            threshold = float(threshold)
            if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
                raise ManifestError(f"operating_point.threshold {threshold} is not in [0, 1]")
        algorithm = known_keys("algorithm", top.get("algorithm", {}), frozenset({"name", "version"}))
        runtimes = {str(key): RuntimeEntry.from_dict(str(key), entry) for key, entry in
                    known_keys(RUNTIMES_KEY, top.get(RUNTIMES_KEY, {}), frozenset(top.get(RUNTIMES_KEY, {}))).items()}
        return ModelManifest(
            manifest_version=version, name=str(top["name"]), algorithm={k: str(v) for k, v in algorithm.items()},
            weights=WeightsEntry(str(weights.get("file", WEIGHTS_FILE)), str(weights["sha256"]).lower(),
                                 weights.get("bytes"), weights.get("dtype")),
            detector=DetectorConfig.from_dict(top["detector"]),
            linking=LinkingConfig.from_dict(top.get("linking", {})),
            operating_point=OperatingPoint(threshold, point.get("fpi"), point.get("definition"), point.get("validation")),
            rescorer=RescoreSettings.from_dict(top[RESCORER_KEY]) if RESCORER_KEY in top else None,
            correspondence=(CorrespondenceModel.from_dict(top[CORRESPONDENCE_KEY])
                            if CORRESPONDENCE_KEY in top else None),
            runtimes=runtimes, training=top.get("training", {}), metrics=top.get("metrics", {}), raw=top,
        )
    except ManifestError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{type(exc).__name__}: {exc}") from None


def read_manifest_file(model_dir: Path, calibrated: bool = True) -> ModelManifest:
    """manifest.json of ``model_dir``, typed; ManifestError naming the file otherwise."""
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path}: model manifest not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: malformed model manifest (not JSON: {exc})") from None
    try:
        return parse_manifest(data, calibrated)
    except ManifestError as exc:
        raise ManifestError(f"{path}: malformed model manifest ({exc})") from None
