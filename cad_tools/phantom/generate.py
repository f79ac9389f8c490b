"""`cad phantom`: synthetic 4-view screening exams with ground truth (truth.json).

Each exam is generated from its own random stream, ``default_rng([seed, exam_index])``, so
exam *k* is identical whatever the number of exams asked for, and the whole set is
reproducible from the seed.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from cad.io.dicom_reader import image_from_dataset
from cad_tools.phantom.anatomy import (
    BreastModel,
    DensityCategory,
    LesionType,
    lesion_position,
    sample_breast,
    sample_lesion,
)
from cad_tools.phantom.detectability import measure_view
from cad_tools.phantom.dicom_writer import (
    ExamIdentity,
    build_dataset,
    phantom_uid,
    write_dataset,
)
from cad_tools.phantom.render import gland_volume, render_view

#: 1.1 adds the optional per-view "detectability" record, 1.2 each lesion's "position" (docs/phantom.md)
TRUTH_SCHEMA_VERSION = "1.2"
VIEWS = ("CC", "MLO")
LATERALITIES = ("R", "L")


@dataclass(frozen=True)
class PhantomConfig:
    """What a phantom set looks like."""

    spacing_mm: float = 0.2
    bits_stored: int = 12
    normal_fraction: float = 0.3
    calcification_fraction: float = 0.2
    one_view_fraction: float = 0.15
    max_lesions: int = 2
    #: probability that a view carries a nipple marker / a collimation band
    marker_probability: float = 0.4
    collimation_probability: float = 0.25


@dataclass(frozen=True)
class PhantomRun:
    truth: dict[str, Any]
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def _exam_breasts(
    rng: np.random.Generator, config: PhantomConfig, exam_index: int
) -> list[BreastModel]:
    density = DensityCategory(str(rng.choice(["A", "B", "C", "D"], p=[0.1, 0.4, 0.4, 0.1])))
    breasts = [sample_breast(rng, lat, density) for lat in LATERALITIES]
    n_lesions = 0 if rng.random() < config.normal_fraction else int(
        rng.integers(1, config.max_lesions + 1)
    )
    for _ in range(n_lesions):
        breast = breasts[int(rng.integers(0, 2))]
        kind = (
            LesionType.CALCIFICATION_CLUSTER
            if rng.random() < config.calcification_fraction
            else LesionType.MASS
        )
        lesion_id = f"E{exam_index:04d}-{breast.laterality}{len(breast.lesions) + 1}"
        breast.lesions.append(
            sample_lesion(rng, breast, lesion_id, kind, config.one_view_fraction)
        )
    for breast in breasts:
        breast.gland_volume = gland_volume(breast, rng)
    return breasts


def generate_exam(
    out_dir: Path, seed: int, exam_index: int, config: PhantomConfig
) -> dict[str, Any]:
    """Render and write one 4-view exam; returns its truth.json entry."""
    rng = np.random.default_rng([seed, exam_index])
    breasts = _exam_breasts(rng, config, exam_index)
    date = f"2026{1 + exam_index % 12:02d}{1 + exam_index % 28:02d}"
    exam = ExamIdentity(
        study_instance_uid=phantom_uid(seed, exam_index, "study"),
        patient_id=f"PHANTOM-{seed}-{exam_index:05d}",
        accession_number=f"PH{seed % 10000:04d}{exam_index:06d}",
        study_date=date,
        study_time="090000",
        patient_age_years=int(rng.integers(40, 75)),
    )
    series_uid = phantom_uid(seed, exam_index, "series")
    images: list[dict[str, Any]] = []
    lesion_views: dict[str, list[dict[str, Any]]] = {}
    instance = 0
    for breast in breasts:
        for view in VIEWS:
            instance += 1
            rendered = render_view(
                breast,
                view,
                config.spacing_mm,
                rng,
                bits_stored=config.bits_stored,
                marker=bool(rng.random() < config.marker_probability),
                collimation=(
                    str(rng.choice(["top", "bottom"]))
                    if rng.random() < config.collimation_probability
                    else None
                ),
            )
            sop_uid = phantom_uid(seed, exam_index, breast.laterality, view)
            relative = Path(f"exam{exam_index:05d}") / f"{breast.laterality}_{view}.dcm"
            dataset = build_dataset(rendered, exam, series_uid, sop_uid, instance)
            write_dataset(dataset, out_dir / relative)
            findable = measure_view(
                image_from_dataset(dataset, relative), dataset, rendered.stored, rendered.breast_mask,
                rendered.lesion_signals, rendered.boxes,
            ) if rendered.boxes else {}
            images.append(
                {
                    "path": relative.as_posix(),
                    "sop_instance_uid": sop_uid,
                    "laterality": breast.laterality,
                    "view": view,
                    "rows": int(rendered.stored.shape[0]),
                    "columns": int(rendered.stored.shape[1]),
                    "pixel_spacing_mm": config.spacing_mm,
                    "landmarks": {
                        "nipple": [round(v, 2) for v in rendered.nipple],
                        "pectoral_line": (
                            [[round(v, 2) for v in p] for p in rendered.pectoral_line]
                            if rendered.pectoral_line
                            else None
                        ),
                    },
                }
            )
            for lesion_id, box in rendered.boxes.items():
                entry: dict[str, Any] = {"sop_instance_uid": sop_uid, "view": view, "box": box}
                if lesion_id in findable:
                    entry["detectability"] = findable[lesion_id].to_dict()
                lesion_views.setdefault(lesion_id, []).append(entry)
    lesions = []
    for breast in breasts:
        for lesion in breast.lesions:
            views = lesion_views.get(lesion.lesion_id, [])
            if not views:
                continue  # fell outside every rendered breast outline: not a lesion to find
            lesions.append(
                {
                    "lesion_id": lesion.lesion_id,
                    "type": lesion.type.value,
                    "shape": lesion.shape.value if lesion.shape else None,
                    "diameter_mm": round(lesion.diameter_mm, 2),
                    "laterality": breast.laterality,
                    "position": lesion_position(breast, lesion),
                    "views": views,
                }
            )
    return {
        "study_instance_uid": exam.study_instance_uid,
        "density": breasts[0].density.value,
        "images": images,
        "lesions": lesions,
    }


def exam_files_of(folder: Path) -> list[list[Path]]:
    """The files of each exam of a generated set, in truth.json's order."""
    truth = json.loads((Path(folder) / "truth.json").read_text())
    return [[Path(folder) / image["path"] for image in exam["images"]] for exam in truth["exams"]]


def generate(
    out_dir: Path | str,
    exams: int,
    seed: int,
    config: PhantomConfig | None = None,
    workers: int = 1,
) -> PhantomRun:
    """Write ``exams`` exams and DIR/truth.json; deterministic for a seed at any ``workers``."""
    config = config or PhantomConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if workers > 1 and exams > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            entries = list(
                pool.map(generate_exam, repeat(out), repeat(seed), range(exams), repeat(config))
            )
    else:
        entries = [generate_exam(out, seed, k, config) for k in range(exams)]
    seconds = time.perf_counter() - start
    truth = {
        "schema_version": TRUTH_SCHEMA_VERSION,
        "generator": "mammo-cad phantom",
        "seed": seed,
        "pixel_spacing_mm": config.spacing_mm,
        "exams": entries,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return PhantomRun(truth, 4 * exams, seconds)
