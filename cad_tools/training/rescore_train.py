"""Training of the second stage (:mod:`cad.detect.rescore`) on first-stage candidates.

`cad train --config rescorer.yaml` (a recipe with ``stage: second``) runs the locked first stage
on the recipe's phantom sets (the candidates of each set are cached by content), trains the
second stage and writes a locked model folder holding both stages under one weights hash.

Batches are whole breasts, so that every candidate sees its counterparts: half of each batch
are breasts holding a candidate on a mass, half drawn at random. Both heads learn together
(binary cross-entropy on candidates with a label; calcification-only hits are ignored).
Selection is by validation FROC on held-out exams: the mean of the dual-view sensitivity at
0.25, 0.5 and 1 false marks per image over masses of at least 8 mm.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from cad.detect.blobs import BlobConfig
from cad.detect.locked import LockedModel, load_locked_model, sha256_file
from cad.detect.rescore import RescorerConfig, RescoreSettings
from cad.detect.runtime import Runtime
from cad_tools.training.candidates import CandidateSet, collect
from cad_torch.network import locked_network, write_locked_model
from cad_torch.rescore_network import DualViewRescorer
from verification.froc import ScoredMark, TruthLesion, score_marks

SELECTION_FPI = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class RescoreSchedule:
    iterations: int = 3000
    breasts_per_batch: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pos_weight: float = 3.0
    eval_every: int = 250
    seed: int = 20261202
    threads: int = 2
    #: intensity jitter of the patches (contrast factor range, brightness, noise SD)
    contrast: tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.15
    noise: float = 0.05


def batch_of(data: CandidateSet, breasts: np.ndarray, starts: np.ndarray, ends: np.ndarray,
             rng: np.random.Generator | None = None, schedule: RescoreSchedule | None = None
             ) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray]:
    """Network inputs for the candidates of ``breasts`` (counterpart indices re-based to the
    batch), their labels and row numbers in ``data``."""
    rows = np.concatenate([np.arange(starts[b], ends[b]) for b in breasts])
    position = np.full(len(data), -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    index = position[data.index[rows]]
    mask = data.mask[rows].copy()
    mask[index < 0] = 0.0
    index = np.maximum(index, 0)
    patches = data.patches[rows].astype(np.float32)
    if rng is not None and schedule is not None:
        n = len(rows)
        scale = rng.uniform(*schedule.contrast, size=(n, 1, 1, 1)).astype(np.float32)
        shift = rng.uniform(-schedule.brightness, schedule.brightness, size=(n, 1, 1, 1)).astype(np.float32)
        patches = patches * scale + shift + rng.normal(0, schedule.noise, patches.shape).astype(np.float32)
    tensors = [torch.from_numpy(np.ascontiguousarray(patches)), torch.from_numpy(data.own[rows].astype(np.float32)),
               torch.from_numpy(index), torch.from_numpy(data.pair[rows].astype(np.float32)),
               torch.from_numpy(mask.astype(np.float32))]
    return tensors, data.label[rows], rows


def _breast_ranges(data: CandidateSet) -> tuple[np.ndarray, np.ndarray]:
    ids = data.breast
    change = np.flatnonzero(np.diff(ids)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(ids)]])
    return starts, ends


def predict(network: DualViewRescorer, data: CandidateSet, breasts_per_call: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(single-view, dual-view) probabilities of every candidate of ``data``."""
    starts, ends = _breast_ranges(data)
    single = np.zeros(len(data), dtype=np.float64)
    dual = np.zeros(len(data), dtype=np.float64)
    network.eval()
    with torch.inference_mode():
        for k in range(0, len(starts), breasts_per_call):
            tensors, _, rows = batch_of(data, np.arange(k, min(k + breasts_per_call, len(starts))), starts, ends)
            s, d = network(*tensors)
            single[rows] = torch.sigmoid(s.double()).numpy()
            dual[rows] = torch.sigmoid(d.double()).numpy()
    return single, dual


def truth_lesions(truth: dict[str, Any], min_diameter_mm: float = 8.0) -> tuple[list[TruthLesion], list[str]]:
    """Mass views of at least ``min_diameter_mm`` (others excluded) and every image UID."""
    lesions = [TruthLesion(lesion["lesion_id"], view["sop_instance_uid"], view["box"],
                           lesion["type"] == "mass" and lesion["diameter_mm"] >= min_diameter_mm)
               for exam in truth["exams"] for lesion in exam["lesions"] for view in lesion["views"]]
    images = [im["sop_instance_uid"] for exam in truth["exams"] for im in exam["images"]]
    return lesions, images


def froc(data: CandidateSet, scores: np.ndarray, truth: dict[str, Any]) -> dict[str, float]:
    """Per-view sensitivity at the selection FPI points with each candidate scored by ``scores``."""
    marks = [ScoredMark(m["sop_instance_uid"], m["box"], float(s)) for m, s in zip(data.meta, scores)]
    lesions, images = truth_lesions(truth)
    result = score_marks(marks, lesions, images)
    out = {f"sens@{f:g}": result.sensitivity_at(f) for f in (0.25, 0.5, 1.0, 2.0)}
    out["selection"] = float(np.mean([result.sensitivity_at(f) for f in SELECTION_FPI]))
    return out


def train_rescorer(train: CandidateSet, validation: CandidateSet, truth: dict[str, Any], out: Path,
                   config: RescorerConfig | None = None, schedule: RescoreSchedule | None = None) -> dict[str, Any]:
    """Train, keep the best validation state in ``out``/best.pt, log to ``out``/rescore.jsonl."""
    config = config or RescorerConfig()
    schedule = schedule or RescoreSchedule()
    torch.set_num_threads(schedule.threads)
    torch.manual_seed(schedule.seed)
    rng = np.random.default_rng(schedule.seed)
    out.mkdir(parents=True, exist_ok=True)
    network = DualViewRescorer(config)
    optimiser = torch.optim.AdamW(network.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    starts, ends = _breast_ranges(train)
    positive = np.array([(train.label[s:e] == 1).any() for s, e in zip(starts, ends)])
    with_mass = np.flatnonzero(positive)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(schedule.pos_weight))
    log = out / "rescore.jsonl"
    baseline = froc(validation, validation.score, truth)
    best: dict[str, Any] = {"selection": -1.0}
    began = time.monotonic()
    with log.open("a") as handle:
        handle.write(json.dumps({"event": "start", "config": config.to_dict(), "schedule": asdict(schedule),
                                 "train_candidates": len(train), "train_positive": int((train.label == 1).sum()),
                                 "validation_first_stage": baseline}) + "\n")
    losses: list[float] = []
    for iteration in range(1, schedule.iterations + 1):
        network.train()
        lr = schedule.lr * 0.5 * (1 + math.cos(math.pi * iteration / schedule.iterations))
        for group in optimiser.param_groups:
            group["lr"] = lr
        half = schedule.breasts_per_batch // 2
        chosen = np.concatenate([rng.choice(with_mass, half), rng.integers(0, len(starts), half)])
        tensors, labels, _ = batch_of(train, chosen, starts, ends, rng, schedule)
        single, dual = network(*tensors)
        keep = torch.from_numpy(labels >= 0)
        target = torch.from_numpy((labels == 1).astype(np.float32))
        loss = loss_fn(single[keep], target[keep]) + loss_fn(dual[keep], target[keep])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if iteration % schedule.eval_every == 0 or iteration == schedule.iterations:
            s, d = predict(network, validation)
            metrics = {"iteration": iteration, "minutes": round((time.monotonic() - began) / 60, 2),
                       "loss": float(np.mean(losses[-schedule.eval_every:])),
                       "single": froc(validation, s, truth), "dual": froc(validation, d, truth)}
            metrics["selection"] = metrics["dual"]["selection"]
            if metrics["selection"] > best["selection"]:
                best = metrics
                torch.save(network.state_dict(), out / "best.pt")
            with log.open("a") as handle:
                handle.write(json.dumps(metrics) + "\n")
            print(json.dumps(metrics), flush=True)
    return {"first_stage": baseline, "best": best}


@dataclass(frozen=True)
class SecondStageRecipe:
    """A second-stage recipe (YAML, ``stage: second``); paths are relative to the file."""

    name: str
    first_stage: Path
    train: tuple[Path, ...]
    validation: tuple[Path, ...]
    settings: RescoreSettings
    schedule: RescoreSchedule
    source_text: str
    #: candidates on smaller masses are neither positives nor negatives
    min_mass_mm: float = 6.0

    @classmethod
    def load(cls, path: Path) -> SecondStageRecipe:
        text = path.read_text()
        raw = yaml.safe_load(text)
        if raw.get("stage") != "second":
            raise ValueError(f"{path}: not a second-stage recipe (stage: second)")
        base = path.parent
        schedule = dict(raw.get("training", {}))
        for key in ("contrast",):
            if key in schedule:
                schedule[key] = tuple(schedule[key])
        settings = RescoreSettings(RescorerConfig.from_dict(raw.get("network", {})),
                                   BlobConfig.from_dict(raw.get("blobs", {})),
                                   float(raw.get("nms_iou", 0.3)), str(raw.get("fusion", "max")))
        return cls(
            name=str(raw["name"]),
            first_stage=(base / raw["first_stage"]).resolve(),
            train=tuple((base / p).resolve() for p in raw["data"]["train"]),
            validation=tuple((base / p).resolve() for p in raw["data"]["validation"]),
            settings=settings,
            schedule=RescoreSchedule(**{**schedule, "seed": int(raw.get("seed", RescoreSchedule.seed))}),
            source_text=text,
            min_mass_mm=float(raw.get("min_mass_mm", 6.0)),
        )


def is_second_stage_recipe(path: Path) -> bool:
    raw = yaml.safe_load(path.read_text())
    return isinstance(raw, dict) and raw.get("stage") == "second"


def _candidates(folder: Path, model_dir: Path, sha256: str, blobs: BlobConfig, min_mass_mm: float,
                cache: Path) -> CandidateSet:
    """The candidates of one phantom set, cached by first-stage weights, blob settings, labelling
    rule and truth."""
    key = hashlib.sha256("|".join([sha256, json.dumps(blobs.to_dict(), sort_keys=True), f"{min_mass_mm:g}",
                                   sha256_file(folder / "truth.json")]).encode()).hexdigest()[:16]
    path = cache / f"{folder.name}-{key}.npz"
    if path.is_file():
        return CandidateSet.load(path)
    model = load_locked_model(model_dir, calibrated=False)
    found = collect(folder, model, _first_stage_runtime(model), blobs, min_mass_mm)
    found.save(path)
    return found


def _first_stage_runtime(model: LockedModel) -> Runtime:
    """ONNX Runtime on the first stage, as `cad detect` runs it; a training run's model folder
    gets its ONNX export registered first (the export is deterministic for given weights)."""
    from cad.detect.runtime import OnnxRuntime
    from cad_torch.export.onnx import export_onnx, register_onnx

    if "onnxruntime" not in model.manifest.runtimes:
        register_onnx(model.path, export_onnx(model, model.path, write_manifest=False))
        model = load_locked_model(model.path, calibrated=False)
    return OnnxRuntime(model)


def train_second_stage(config_path: Path, run_dir: Path) -> Path:
    """Train the second stage per the recipe; returns the locked two-stage model folder."""
    recipe = SecondStageRecipe.load(config_path)
    torch.set_num_threads(recipe.schedule.threads)
    first = load_locked_model(recipe.first_stage, calibrated=False)
    cache = run_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    blobs = recipe.settings.blobs
    rule = recipe.min_mass_mm
    train = CandidateSet.concatenate([_candidates(f, recipe.first_stage, first.sha256, blobs, rule, cache)
                                      for f in recipe.train])
    validation = CandidateSet.concatenate([_candidates(f, recipe.first_stage, first.sha256, blobs, rule, cache)
                                           for f in recipe.validation])
    truth = {"exams": [e for f in recipe.validation for e in json.loads((f / "truth.json").read_text())["exams"]]}
    result = train_rescorer(train, validation, truth, run_dir, recipe.settings.network, recipe.schedule)
    network = DualViewRescorer(recipe.settings.network)
    network.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu"))
    network.eval()
    training = dict(first.manifest.training)
    training["rescorer"] = {
        "config": recipe.source_text,
        "first_stage_sha256": first.sha256,
        "data": {"train": [str(f) for f in recipe.train], "validation": [str(f) for f in recipe.validation],
                 "train_candidates": len(train), "train_positive": int((train.label == 1).sum()),
                 "validation_candidates": len(validation)},
        "schedule": asdict(recipe.schedule),
        "best_iteration": result["best"].get("iteration"),
        "torch": torch.__version__,
    }
    metrics = dict(first.manifest.metrics)
    metrics["rescorer_validation"] = {"first_stage": result["first_stage"], "best": result["best"]}
    return write_locked_model(
        run_dir / "model", locked_network(first), first.config, recipe.name,
        operating_point={"threshold": None, "definition": "set by calibration on validation phantoms"},
        training=training, metrics=metrics, rescorer=(network, recipe.settings),
    )
