"""The typed model manifest: parsed once, unknown keys refused (SRS-MOD-004)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from cad.detect.locked import DEFAULT_MODEL_DIR, load_locked_model
from cad.detect.manifest import MANIFEST_FILE, ManifestError, parse_manifest

RELEASED: dict[str, Any] = json.loads((DEFAULT_MODEL_DIR / MANIFEST_FILE).read_text())


def changed(path: list[str], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(RELEASED)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.req("SRS-MOD-004")
@pytest.mark.parametrize(("path", "value", "message"), [
    (["thresold"], 0.5, "manifest: unknown key(s) thresold"),
    (["operating_point", "treshold"], 0.5, "operating_point: unknown key(s) treshold"),
    (["weights", "sha265"], "x", "weights: unknown key(s) sha265"),
    (["algorithm", "vesion"], "1", "algorithm: unknown key(s) vesion"),
    (["detector", "nms_iuo"], 0.5, "nms_iuo"),
    (["linking", "gates"], 3.0, "gates"),
    (["operating_point", "threshold"], 1.5, "is not in [0, 1]"),
    (["operating_point", "threshold"], None, "not calibrated"),
    (["runtimes", "onnxruntime"], {"file": "detector.onnx"}, "runtimes.onnxruntime: an export entry names"),
    (["manifest_version"], "2.0", "manifest_version 2.0"),
])
def test_unknown_or_invalid_settings_are_refused(path: list[str], value: Any, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(changed(path, value))
    assert message in str(caught.value)


@pytest.mark.req("SRS-MOD-004")
def test_the_released_manifest_parses_with_its_settings_hash_unchanged() -> None:
    manifest = parse_manifest(RELEASED)
    model = load_locked_model()
    assert manifest.threshold == model.operating_threshold and manifest.name == model.name
    assert manifest.settings_sha256() == model.settings_sha256
    assert manifest.linking == model.linking and manifest.detector == model.config
    assert parse_manifest(changed(["operating_point", "threshold"], None), calibrated=False).operating_point.threshold is None
    exported = manifest.with_export("tensorrt", {"file": "e.plan", "sha256": "0" * 64, "source_weights_sha256": "1" * 64})
    assert exported.runtimes["tensorrt"].file == "e.plan" and exported.settings_sha256() == manifest.settings_sha256()


@pytest.mark.req("SRS-MOD-004")
def test_the_geometry_resolution_is_a_locked_setting() -> None:
    released = parse_manifest(RELEASED)
    assert "geometry_mm" not in RELEASED["detector"] and released.detector.geometry_mm == 0.5
    coarse = parse_manifest(changed(["detector", "geometry_mm"], 1.0))
    assert coarse.detector.geometry_mm == 1.0
    # another geometry is another model output: its settings hash (and so its output UIDs) differ
    assert coarse.settings_sha256() != released.settings_sha256()
    with pytest.raises(ManifestError, match="geometry_mm 5.0 is outside"):
        parse_manifest(changed(["detector", "geometry_mm"], 5.0))
