"""A short `cad train` run: run log, checkpoint, resume and the locked model it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cad.detect.locked import MANIFEST_FILE, sha256_file
from cad.tools.training.train import train

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
