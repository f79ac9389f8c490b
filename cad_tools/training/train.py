"""`cad train --config FILE`: patch-based RetinaNet training with validation-FROC early stopping.

A run folder holds ``run.jsonl`` (config, data hashes, every validation), ``checkpoint.pt``
(model, optimiser, schedule, iteration and random states, for ``--resume``),
``best.safetensors`` and, at the end, ``model/``: the locked-model folder of the best
validation checkpoint. Seeds are fixed; the same config on the same machine and thread count
repeats the same run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cad.detect.config import DetectorConfig
from cad.detect.inputs import pad_to_stride
from cad.detect.locked import sha256_file
from cad.detect.postprocess import ViewDetections
from cad_tools.training.datasets import AnnotatedImage, load_dataset
from cad_tools.training.prepare import PreparedImage, prepare_all
from cad_tools.training.sampler import AugmentConfig, PatchSampler
from cad_torch.network import build_detector, write_locked_model
from verification.froc import ScoredMark, TruthLesion, score_marks

log = logging.getLogger(__name__)
VALIDATION_FPI = (0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class DataSource:
    format: str
    path: Path
    split: str | None = None
    options: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Schedule:
    patch_size: int = 256
    batch_size: int = 8
    positive_fraction: float = 0.7
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_iterations: int = 100
    max_iterations: int = 3000
    max_minutes: float = 60.0
    eval_every: int = 250
    patience: int = 4
    threads: int = 2
    workers: int = 2
    #: "auto" trains on a CUDA GPU when one is present, else on the CPU
    device: str = "auto"
    #: "bf16" runs forward and loss under bfloat16 autocast (weights, gradients and optimiser
    #: stay float32); "auto" picks it where the hardware computes bfloat16 natively (AMX/AVX-512
    #: BF16 CPUs, CUDA GPUs with bf16), else "fp32". Validation and the locked model are float32.
    #: The default keeps the released model's recipe (float32) reproducible.
    precision: str = "fp32"
    #: channels-last memory layout for the convolutions (faster with oneDNN on CPUs)
    channels_last: bool = False
    #: share of patches centred on hard negatives once they are mined: at iteration
    #: ``hard_negative_from``, the network of that moment marks ``hard_negative_images`` training
    #: images (a seeded sample) and its false marks (score >= hard_negative_min_score, centre in
    #: no lesion box) become patch centres. Mining inside the run keeps the recipe
    #: self-contained; 0 keeps the released 0.2.0 recipe
    hard_negative_fraction: float = 0.0
    hard_negative_from: int = 0
    hard_negative_images: int = 1500
    hard_negative_min_score: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    name: str
    seed: int
    detector: DetectorConfig
    train: tuple[DataSource, ...]
    validation: tuple[DataSource, ...]
    schedule: Schedule
    augment: AugmentConfig
    source_text: str

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        text = path.read_text()
        raw = yaml.safe_load(text)
        base = path.parent

        def sources(items: list[dict[str, Any]]) -> tuple[DataSource, ...]:
            return tuple(
                DataSource(i["format"], (base / i["path"]).resolve(), i.get("split"), i.get("options", {}))
                for i in items
            )

        augment = dict(raw.get("augment", {}))
        for key in ("scale_range", "contrast_range"):
            if key in augment:
                augment[key] = tuple(augment[key])
        training = dict(raw.get("training", {}))
        return cls(
            name=raw["name"],
            seed=int(raw.get("seed", 0)),
            detector=DetectorConfig.from_dict(raw.get("detector", {})),
            train=sources(raw["data"]["train"]),
            validation=sources(raw["data"]["validation"]),
            schedule=Schedule(**training),
            augment=AugmentConfig(**augment),
            source_text=text,
        )


def _items(sources: tuple[DataSource, ...]) -> list[AnnotatedImage]:
    out: list[AnnotatedImage] = []
    for s in sources:
        out.extend(load_dataset(s.format, s.path, s.split, **s.options))
    return out


def data_hash(items: list[AnnotatedImage]) -> str:
    """SHA-256 over every file's content hash and its annotations, in a stable order."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: str(i.path)):
        digest.update(f"{item.path.name}|{sha256_file(item.path)}|{item.boxes}|{item.other_boxes}|"
                      f"{item.laterality}|{item.view}|{item.spacing_mm}\n".encode())
    return digest.hexdigest()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (not emulated, which would be slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def training_precision(requested: str, device: torch.device) -> str:
    """The precision a run trains in: ``fp32``, or ``bf16`` where asked (or ``auto``) and native."""
    if requested not in {"auto", "fp32", "bf16"}:
        raise ValueError(f"training.precision: {requested!r}; use auto, fp32 or bf16")
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return requested


def validate(network: torch.nn.Module, images: list[PreparedImage]) -> dict[str, float]:
    """Whole-image lesion-level FROC on the validation set (model-input pixels)."""
    marks: list[ScoredMark] = []
    lesions: list[TruthLesion] = []
    network.eval()
    for k, image in enumerate(images):
        det = _raw_detect(network, pad_to_stride(image.array.astype(np.float32)))
        marks.extend(ScoredMark(str(k), b, float(s)) for b, s in zip(det.model_boxes, det.scores))
        lesions.extend(TruthLesion(f"{k}:{j}", str(k), b) for j, b in enumerate(image.boxes))
        lesions.extend(TruthLesion(f"{k}:o{j}", str(k), b, included=False) for j, b in enumerate(image.other_boxes))
    result = score_marks(marks, lesions, [str(k) for k in range(len(images))])
    metrics = {f"sens@{f:g}": result.sensitivity_at(f) for f in VALIDATION_FPI}
    metrics["froc_mean"] = float(np.mean(list(metrics.values())))
    return metrics


def _raw_detect(network: torch.nn.Module, array: np.ndarray) -> ViewDetections:
    device = next(network.parameters()).device
    with torch.inference_mode():
        out = network([torch.from_numpy(array)[None].to(device)])[0]
    boxes = out["boxes"].double().cpu().numpy().reshape(-1, 4)
    return ViewDetections(boxes, boxes, out["scores"].double().cpu().numpy())


def mine_hard_negatives(network: torch.nn.Module, images: list[PreparedImage], which: np.ndarray,
                        min_score: float) -> list[tuple[int, np.ndarray]]:
    """False marks of ``network`` on the training images ``which``: (image index, box centre) of
    every detection scoring at least ``min_score`` whose centre lies in no lesion box (masses
    and other findings alike), in model-input pixels."""
    network.eval()
    found: list[tuple[int, np.ndarray]] = []
    for k in which:
        k = int(k)
        image = images[k]
        det = _raw_detect(network, pad_to_stride(image.array.astype(np.float32)))
        height, width = image.array.shape
        known = np.concatenate([image.boxes.reshape(-1, 4), image.other_boxes.reshape(-1, 4)])
        for box, score in zip(det.model_boxes, det.scores):
            centre = (box[:2] + box[2:]) / 2
            if score < min_score or not (0 <= centre[0] < width and 0 <= centre[1] < height):
                continue
            inside = ((known[:, 0] <= centre[0]) & (centre[0] < known[:, 2]) &
                      (known[:, 1] <= centre[1]) & (centre[1] < known[:, 3]))
            if not inside.any():
                found.append((k, centre))
    return found


def _lr(schedule: Schedule, iteration: int) -> float:
    if iteration < schedule.warmup_iterations:
        return schedule.lr * (iteration + 1) / schedule.warmup_iterations
    span = max(1, schedule.max_iterations - schedule.warmup_iterations)
    progress = min(1.0, (iteration - schedule.warmup_iterations) / span)
    return schedule.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _log(run_dir: Path, record: dict[str, Any]) -> None:
    with (run_dir / "run.jsonl").open("a") as handle:
        handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")


def train(config_path: Path, run_dir: Path, resume: bool = False) -> Path:
    """Train per ``config_path`` into ``run_dir``; returns the locked-model folder written."""
    config = TrainConfig.load(config_path)
    sched = config.schedule
    torch.set_num_threads(sched.threads)
    _seed_everything(config.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    train_items, val_items = _items(config.train), _items(config.validation)
    hashes = {"train": data_hash(train_items), "validation": data_hash(val_items)}
    cache = run_dir / "cache"
    train_images, train_refused = prepare_all(train_items, config.detector, cache, sched.workers)
    val_images, val_refused = prepare_all(val_items, config.detector, cache, sched.workers)
    description = {
        "train": [{"format": s.format, "path": str(s.path), "split": s.split} for s in config.train],
        "validation": [{"format": s.format, "path": str(s.path), "split": s.split} for s in config.validation],
        "train_images": len(train_images), "train_masses": int(sum(len(i.boxes) for i in train_images)),
        "validation_images": len(val_images),
        "validation_masses": int(sum(len(i.boxes) for i in val_images)),
        "refused": len(train_refused) + len(val_refused),
        "sha256": hashes,
    }
    device = _device(sched.device)
    precision = training_precision(sched.precision, device)
    network = build_detector(config.detector).to(device)
    if sched.channels_last:
        network = network.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(network.parameters(), lr=sched.lr, weight_decay=sched.weight_decay)
    rng = np.random.default_rng(config.seed)
    start, best, best_metrics, stale, elapsed_before = 0, -1.0, {}, 0, 0.0
    checkpoint = run_dir / "checkpoint.pt"
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False, map_location=device)
        network.load_state_dict(state["model"])
        network.to(device)
        optimiser.load_state_dict(state["optimiser"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
        start, best, best_metrics, stale = state["iteration"], state["best"], state["best_metrics"], state["stale"]
        elapsed_before = state["elapsed"]
        _log(run_dir, {"event": "resume", "iteration": start})
    else:
        _log(run_dir, {"event": "start", "config": config.source_text, "config_sha256":
                       hashlib.sha256(config.source_text.encode()).hexdigest(), "data": description,
                       "torch": torch.__version__, "threads": sched.threads,
                       "device": str(device), "precision": precision})
    sampler = PatchSampler(train_images, sched.patch_size, sched.positive_fraction, config.augment, rng)
    mined = run_dir / "hard_negatives.npy"
    if sched.hard_negative_fraction > 0 and start >= sched.hard_negative_from and mined.is_file():
        sampler.hard_negatives = [(int(row[0]), row[1:3].copy()) for row in np.load(mined)]
        sampler.hard_negative_fraction = sched.hard_negative_fraction
    began = time.monotonic() - elapsed_before
    losses: list[float] = []
    reason = "max_iterations"
    columns = (TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.3f} best {task.fields[best]:.3f}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("train", total=sched.max_iterations, completed=start, loss=0.0, best=max(best, 0))
        iteration = start
        while iteration < sched.max_iterations:
            if sched.hard_negative_fraction > 0 and iteration == sched.hard_negative_from and not sampler.hard_negatives:
                which = np.sort(np.random.default_rng(config.seed + 1).choice(
                    len(train_images), min(sched.hard_negative_images, len(train_images)), replace=False))
                hard = mine_hard_negatives(network, train_images, which, sched.hard_negative_min_score)
                np.save(mined, np.array([(k, *c) for k, c in hard], dtype=np.float64).reshape(-1, 3))
                _log(run_dir, {"event": "hard_negatives", "iteration": iteration, "images": len(which),
                               "count": len(hard), "images_with_one": len({k for k, _ in hard})})
                sampler.hard_negatives = hard
                sampler.hard_negative_fraction = sched.hard_negative_fraction if hard else 0.0
            network.train()
            for group in optimiser.param_groups:
                group["lr"] = _lr(sched, iteration)
            images, targets = sampler.batch(sched.batch_size)
            images = [i.to(device) for i in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss_parts = network(images, targets)
            loss = sum(loss_parts.values())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
            optimiser.step()
            losses.append(float(loss.detach()))
            iteration += 1
            progress.update(task, completed=iteration, loss=float(np.mean(losses[-50:])))
            minutes = (time.monotonic() - began) / 60
            out_of_time = minutes >= sched.max_minutes
            if iteration % sched.eval_every == 0 or iteration == sched.max_iterations or out_of_time:
                metrics = validate(network, val_images)
                improved = metrics["froc_mean"] > best
                if improved:
                    best, best_metrics, stale = metrics["froc_mean"], {**metrics, "iteration": iteration}, 0
                    torch.save(network.state_dict(), run_dir / "best.pt")
                else:
                    stale += 1
                _log(run_dir, {"event": "validation", "iteration": iteration, "minutes": round(minutes, 2),
                               "loss": float(np.mean(losses[-sched.eval_every:])), **metrics,
                               "improved": improved})
                torch.save({"model": network.state_dict(), "optimiser": optimiser.state_dict(),
                            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                            "iteration": iteration, "best": best, "best_metrics": best_metrics,
                            "stale": stale, "elapsed": time.monotonic() - began}, checkpoint)
                progress.update(task, best=best)
                if stale >= sched.patience:
                    reason = "early_stopping"
                    break
                if out_of_time:
                    reason = "max_minutes"
                    break
    network.load_state_dict(torch.load(run_dir / "best.pt", map_location=device))
    network.cpu()
    training = {"config": config.source_text, "data": description, "iterations": iteration,
                "stopped": reason, "minutes": round((time.monotonic() - began) / 60, 1),
                "best_iteration": best_metrics.get("iteration"), "schedule": asdict(sched),
                "augment": asdict(config.augment), "seed": config.seed, "torch": torch.__version__,
                "precision": precision}
    out = write_locked_model(
        run_dir / "model", network, config.detector, config.name,
        operating_point={"threshold": None, "definition": "set by `cad evaluate` on held-out data"},
        training=training, metrics={"validation": best_metrics},
    )
    _log(run_dir, {"event": "end", "iterations": iteration, "stopped": reason, "best": best_metrics})
    return out
