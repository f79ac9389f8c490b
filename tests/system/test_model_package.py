"""The released locked model package in models/ (SRS-MOD-002)."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from cad.detect.config import DetectorConfig
from cad.detect.linking import LinkingConfig
from cad.detect.locked import DEFAULT_MODEL_DIR, sha256_file

MAX_BYTES = 30 * 1024 * 1024


@pytest.mark.req("SRS-MOD-002")
def test_weights_size_format_and_hash() -> None:
    weights = DEFAULT_MODEL_DIR / "weights.safetensors"
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert weights.stat().st_size <= MAX_BYTES
    assert manifest["weights"]["bytes"] == weights.stat().st_size
    assert manifest["weights"]["sha256"] == sha256_file(weights)
    with safe_open(str(weights), framework="pt") as handle:
        dtypes = {str(handle.get_tensor(k).dtype) for k in handle.keys()}
    assert "torch.float16" in dtypes and "torch.float32" not in dtypes


@pytest.mark.req("SRS-MOD-002")
def test_manifest_records_configuration_training_and_metrics() -> None:
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    DetectorConfig.from_dict(manifest["detector"])
    LinkingConfig.from_dict(manifest["linking"])
    assert 0 < manifest["operating_point"]["threshold"] < 1
    training = manifest["training"]
    assert "name: phantom-retinanet-r18" in training["config"]
    assert len(training["data"]["sha256"]["train"]) == 64
    assert training["data"]["train_images"] > 0
    test = manifest["metrics"]["test"]
    assert test["data"]["seed"] not in (1001, 1002, 1003), "test phantoms must come from an unseen seed"
    assert test["data"]["exams"] >= 100


@pytest.mark.req("SRS-MOD-002")
def test_model_card_states_intended_use_and_limits() -> None:
    card = (DEFAULT_MODEL_DIR / "MODEL_CARD.md").read_text()
    for phrase in ("Intended use", "synthetic", "not for clinical use", "Limitations"):
        assert phrase.lower() in card.lower(), phrase
