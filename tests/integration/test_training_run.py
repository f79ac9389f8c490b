"""A short `cad train` run: run log, checkpoint, resume and the locked model it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cad.detect.config import DetectorConfig
from cad.detect.detector import run_network
from cad.detect.inputs import prepare_view
from cad.detect.locked import MANIFEST_FILE, sha256_file
from cad.detect.model import build_detector
from cad.io import load
from cad.tools.training.train import native_bf16, train, training_precision

CONFIG = """
name: tiny
seed: 7
detector: {{backbone: resnet18, fpn_channels: 32}}
data:
  train: [{{format: phantom, path: {data}}}]
  validation: [{{format: phantom, path: {data}}}]
training: {{patch_size: 128, batch_size: 2, max_iterations: {iterations}, eval_every: 1,
           warmup_iterations: 1, workers: 1, threads: 1, patience: 5}}
"""


@pytest.mark.req("SRS-TRN-003")
@pytest.mark.slow
def test_short_run_logs_checkpoints_resumes_and_locks(tmp_path: Path, mass_phantom_dir: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG.format(data=mass_phantom_dir, iterations=2))
    run_dir = tmp_path / "run"
    model_dir = train(config, run_dir)
    records = [json.loads(line) for line in (run_dir / "run.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["event"] == "start" and "name: tiny" in start["config"]
    assert len(start["data"]["sha256"]["train"]) == 64
    assert start["data"]["train_images"] == 4
    assert [r["iteration"] for r in records if r["event"] == "validation"] == [1, 2]
    assert (run_dir / "checkpoint.pt").is_file()
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    assert manifest["weights"]["sha256"] == sha256_file(model_dir / "weights.safetensors")
    assert manifest["training"]["data"]["sha256"] == start["data"]["sha256"]

    config.write_text(CONFIG.format(data=mass_phantom_dir, iterations=3))
    train(config, run_dir, resume=True)
    records = [json.loads(line) for line in (run_dir / "run.jsonl").read_text().splitlines()]
    resumed = [r for r in records if r["event"] == "resume"]
    assert resumed and resumed[0]["iteration"] == 2
    assert records[-1]["event"] == "end" and records[-1]["iterations"] == 3


@pytest.mark.req("SRS-TRN-004")
def test_precision_choice_follows_the_hardware() -> None:
    cpu = torch.device("cpu")
    assert training_precision("fp32", cpu) == "fp32"
    assert training_precision("bf16", cpu) == "bf16"
    assert training_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    with pytest.raises(ValueError, match="training.precision"):
        training_precision("fp8", cpu)


@pytest.mark.req("SRS-TRN-004")
@pytest.mark.slow
def test_bf16_channels_last_run_locks_a_float_model(tmp_path: Path, mass_phantom_dir: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(CONFIG.format(data=mass_phantom_dir, iterations=2).replace(
        "patience: 5}", "patience: 5, precision: bf16, channels_last: true}"))
    model_dir = train(config, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "run.jsonl").read_text().splitlines()]
    assert records[0]["precision"] == "bf16"
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    assert manifest["training"]["precision"] == "bf16"
    weights = load_file(str(model_dir / "weights.safetensors"))
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    assert manifest["weights"]["sha256"] == sha256_file(model_dir / "weights.safetensors")
    config = DetectorConfig.from_dict(manifest["detector"])
    network = build_detector(config)
    network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    (found,) = run_network(network, [prepare_view(load([mass_phantom_dir]).images[0], config)])
    assert found.scores.dtype == np.float64 and np.all(np.isfinite(found.scores))
