"""A short `cad train` run: run log, checkpoint, resume and the locked model it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cad.detect.config import DetectorConfig
from cad.detect.inputs import prepare_view
from cad.detect.locked import MANIFEST_FILE, ModelIntegrityError, default_model_dir, load_locked_model, sha256_file
from cad.io import load
from cad_tools.training.datasets import load_dataset
from cad_tools.training.prepare import PreparedImage, prepare_all
from cad_tools.training.rescore_train import train_second_stage
from cad_tools.training.sampler import AugmentConfig, PatchSampler
from cad_tools.training.train import native_bf16, train, training_precision
from cad_torch.network import build_detector, locked_network, locked_rescorer
from cad_torch.runtime import run_network

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


@pytest.mark.req("SRS-TRN-005")
def test_small_masses_are_not_positives_when_the_recipe_says_so(mass_phantom_dir: Path,
                                                                 mass_truth: dict) -> None:  # type: ignore[type-arg]
    sizes = sorted(lesion["diameter_mm"] for lesion in mass_truth["exams"][0]["lesions"] if lesion["type"] == "mass")
    cut = (sizes[0] + sizes[-1]) / 2
    every = load_dataset("phantom", mass_phantom_dir)
    large = load_dataset("phantom", mass_phantom_dir, min_mass_mm=cut)
    assert sum(len(i.boxes) for i in every) == sum(len(i.boxes) + len(i.other_boxes) for i in large) - sum(
        len(i.other_boxes) for i in every)
    small_views = sum(len(lesion["views"]) for lesion in mass_truth["exams"][0]["lesions"]
                      if lesion["type"] == "mass" and lesion["diameter_mm"] < cut)
    assert small_views > 0
    assert sum(len(i.boxes) for i in large) == sum(len(i.boxes) for i in every) - small_views


@pytest.mark.req("SRS-TRN-005")
@pytest.mark.slow
def test_hard_negatives_are_mined_by_the_run_itself(tmp_path: Path, mass_phantom_dir: Path) -> None:
    config = tmp_path / "train.yaml"
    # an untrained network scores about its focal-loss prior (0.01): a low floor lets it mark
    config.write_text(CONFIG.format(data=mass_phantom_dir, iterations=2).replace(
        "patience: 5}", "patience: 5, hard_negative_fraction: 0.3, hard_negative_from: 1, "
                        "hard_negative_min_score: 0.0, hard_negative_images: 4}").replace(
        "fpn_channels: 32}", "fpn_channels: 32, score_floor: 0.001}"))
    run_dir = tmp_path / "run"
    train(config, run_dir)
    records = [json.loads(line) for line in (run_dir / "run.jsonl").read_text().splitlines()]
    (mined,) = [r for r in records if r["event"] == "hard_negatives"]
    assert mined["iteration"] == 1 and mined["images"] == 4
    centres = np.load(run_dir / "hard_negatives.npy")
    assert len(centres) == mined["count"] > 0  # an untrained network marks plenty of background
    images, _ = prepare_all(load_dataset("phantom", mass_phantom_dir), DetectorConfig(fpn_channels=32, score_floor=0.001),
                            run_dir / "cache", workers=1)
    for k, x, y in centres:
        boxes = images[int(k)].boxes.reshape(-1, 4)
        assert not ((boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] <= y) & (y < boxes[:, 3])).any()


@pytest.mark.req("SRS-TRN-005")
def test_sampler_centres_hard_negative_patches_on_mined_marks() -> None:
    image = PreparedImage(np.zeros((300, 300), np.float16), np.array([[10, 10, 30, 30]], np.float32),
                          np.zeros((0, 4), np.float32), "test", "x")
    hard = [(0, np.array([200.0, 150.0]))]
    sampler = PatchSampler([image], 64, 0.0, AugmentConfig(), np.random.default_rng(1), hard, 1.0)
    for _ in range(20):
        k, centre = sampler._centre()
        assert k == 0 and np.abs(centre - hard[0][1]).max() <= 0.35 * 64
    with pytest.raises(ValueError, match="exceeds 1"):
        PatchSampler([image], 64, 0.8, AugmentConfig(), np.random.default_rng(1), hard, 0.5)


SECOND = """
stage: second
name: tiny-two-stage
seed: 3
first_stage: {first}
data:
  train: [{data}]
  validation: [{data}]
network: {{channels: [8, 8], embedding: 8, hidden: 8, counterparts: 2}}
blobs: {{per_view: 4}}
training: {{iterations: 2, eval_every: 1, breasts_per_batch: 2, threads: 1}}
"""


@pytest.mark.req("SRS-TRN-006")
@pytest.mark.slow
def test_second_stage_run_locks_both_stages_under_one_hash(tmp_path: Path, mass_phantom_dir: Path) -> None:
    # a first stage straight from `cad train`: no operating point yet, refused at a site
    first_dir = tmp_path / "first"
    shutil.copytree(default_model_dir(), first_dir)
    manifest = json.loads((first_dir / MANIFEST_FILE).read_text())
    manifest["operating_point"] = {"threshold": None}
    (first_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="malformed model manifest"):
        load_locked_model(first_dir)
    recipe = tmp_path / "rescorer.yaml"
    recipe.write_text(SECOND.format(first=first_dir, data=mass_phantom_dir))
    run_dir = tmp_path / "run"
    model_dir = train_second_stage(recipe, run_dir)
    # the operating point is set by calibration; give it one to load the folder as a site would
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    manifest["operating_point"]["threshold"] = 0.5
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    model = load_locked_model(model_dir)
    first = load_locked_model(default_model_dir())
    assert locked_rescorer(model) is not None and model.rescore_settings is not None
    assert model.rescore_settings.network.channels == (8, 8) and model.rescore_settings.blobs.per_view == 4
    record = manifest["training"]["rescorer"]
    assert record["first_stage_sha256"] == first.sha256
    assert record["data"]["train_candidates"] > 0 and "stage: second" in record["config"]
    for name, tensor in locked_network(first).state_dict().items():  # the first stage is carried unchanged
        assert torch.equal(locked_network(model).state_dict()[name].half(), tensor.half())
    cached = sorted((run_dir / "cache").glob("*.npz"))
    assert len(cached) == 1  # train and validation are the same set here: one cache entry
    stamp = cached[0].stat().st_mtime_ns
    train_second_stage(recipe, run_dir)
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not collected again
