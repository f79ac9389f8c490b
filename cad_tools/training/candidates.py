"""First-stage candidates of phantom exams, with their second-stage inputs and truth labels.

The locked first stage runs on every view of every exam exactly as `cad detect` runs it; each
candidate gets its patches and features (:mod:`cad.detect.rescore`), its counterparts in the
other view of the breast, and a label from truth.json: 1 when its box centre lies in the box of a
mass of at least ``min_mass_mm`` (the evaluation's localisation rule), 0 when it lies in no
lesion box, -1 (ignored) when it lies only in a smaller mass's or a calcification cluster's box,
which a detector of masses of 8 mm and more is neither rewarded nor penalised for. Exams that the second stage trains
on must be kept apart from the exams that
select or evaluate it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from cad.analysis.pipeline import detect_views
from cad.detect import rescore
from cad.detect.blobs import BlobConfig
from cad.detect.locked import LockedModel
from cad.detect.runtime import Runtime
from cad.io import load
from cad_torch.runtime import TorchRuntime
from verification.froc import localises

ARRAYS = ("patches", "own", "index", "pair", "mask", "label", "breast", "score")


@dataclass
class CandidateSet:
    """Every candidate of a set of breasts, concatenated; ``breast`` numbers each row's breast
    (rows of one breast are contiguous, and ``index`` points within the whole set)."""

    patches: np.ndarray
    own: np.ndarray
    index: np.ndarray
    pair: np.ndarray
    mask: np.ndarray
    label: np.ndarray
    breast: np.ndarray
    score: np.ndarray
    meta: list[dict[str, Any]]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **{k: getattr(self, k) for k in ARRAYS})
        path.with_suffix(".json").write_text(json.dumps(self.meta) + "\n")

    @classmethod
    def load(cls, path: Path) -> CandidateSet:
        data = np.load(path)
        return cls(**{k: data[k] for k in ARRAYS}, meta=json.loads(path.with_suffix(".json").read_text()))

    def __len__(self) -> int:
        return len(self.label)

    @classmethod
    def concatenate(cls, sets: list[CandidateSet]) -> CandidateSet:
        """One set of several, counterpart indices and breast numbers shifted to stay apart."""
        rows = np.cumsum([0] + [len(s) for s in sets])
        breasts = np.cumsum([0] + [int(s.breast.max()) + 1 if len(s) else 0 for s in sets])
        arrays = {k: np.concatenate([getattr(s, k) for s in sets]) for k in ARRAYS if k not in ("index", "breast")}
        arrays["index"] = np.concatenate([s.index + rows[k] for k, s in enumerate(sets)])
        arrays["breast"] = np.concatenate([s.breast + breasts[k] for k, s in enumerate(sets)])
        return cls(**arrays, meta=[m for s in sets for m in s.meta])


def collect(phantom_dir: Path, model: LockedModel, runtime: Runtime | None = None,
            blob_config: BlobConfig | None = None, min_mass_mm: float = 6.0) -> CandidateSet:
    """Candidates of every exam in ``phantom_dir`` (truth.json and its DICOM files)."""
    blob_config = blob_config or BlobConfig()
    truth = json.loads((phantom_dir / "truth.json").read_text())
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
    meta: list[dict[str, Any]] = []
    offset = breast_number = 0
    with Progress() as progress:
        task = progress.add_task(f"candidates {phantom_dir.name}", total=len(truth["exams"]))
        for exam in truth["exams"]:
            folder = phantom_dir / Path(exam["images"][0]["path"]).parent
            studies = load([folder]).studies
            images = [image for study in studies for image in study.images]
            analysed, _ = detect_views(model, images, runtime or TorchRuntime(model, max_batch=1))
            boxes: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {im["sop_instance_uid"]: [] for im in exam["images"]}
            for lesion in exam["lesions"]:
                for view in lesion["views"]:
                    boxes[view["sop_instance_uid"]].append((lesion, view))
            for laterality in ("R", "L"):
                views = [v for v in analysed if v.image.laterality.value == laterality]
                if not views:
                    continue
                inputs = rescore.breast_inputs([(v.view_input, v.image.view, v.detections) for v in views],
                                               blob_config)
                labels, rows = [], []
                for position, view_found in zip(inputs.views, inputs.found):
                    v = views[position]
                    for k, box in enumerate(view_found.boxes):
                        hits = [(lesion, view) for lesion, view in boxes.get(v.image.sop_instance_uid, [])
                                if localises(box, view["box"])]
                        masses = [(lesion, view) for lesion, view in hits
                                  if lesion["type"] == "mass" and lesion["diameter_mm"] >= min_mass_mm]
                        labels.append(1 if masses else (-1 if hits else 0))
                        best = max(masses, key=lambda h: h[0]["diameter_mm"]) if masses else None
                        rows.append({
                            "exam": exam["study_instance_uid"], "sop_instance_uid": v.image.sop_instance_uid,
                            "laterality": laterality, "view": v.image.view.value, "detection": k,
                            "from_blob": bool(view_found.from_blob[k]),
                            "box": [round(float(c), 2) for c in box],
                            "lesion_id": best[0]["lesion_id"] if best else None,
                            "diameter_mm": best[0]["diameter_mm"] if best else None,
                            "visible": (best[1].get("detectability") or {}).get("visible") if best else None,
                        })
                n = len(inputs)
                parts["patches"].append(inputs.patches.astype(np.float16))
                parts["own"].append(inputs.own)
                parts["index"].append(inputs.pairs.index + offset)
                parts["pair"].append(inputs.pairs.features)
                parts["mask"].append(inputs.pairs.mask)
                parts["label"].append(np.asarray(labels, dtype=np.int8))
                parts["breast"].append(np.full(n, breast_number, dtype=np.int32))
                parts["score"].append(np.asarray([c.score for c in inputs.linking], dtype=np.float32))
                meta += rows
                offset += n
                breast_number += 1
            progress.advance(task)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    return CandidateSet(**arrays, meta=meta)
