"""Detectability of lesion views from their exact signal (SRS-PHA-005, docs/phantom.md)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from cad.io.dicom_reader import image_from_dataset
from cad_tools.phantom import render
from cad_tools.phantom.anatomy import BreastModel, DensityCategory, Lesion, LesionType, MassShape, sample_breast
from cad_tools.phantom.detectability import FORMS, measure_view
from cad_tools.phantom.dicom_writer import ExamIdentity, build_dataset
from cad_tools.phantom.render import gland_volume, render_view
from verification.standalone import EvaluationInputError, load_truth

SCHEMA = Path(__file__).resolve().parents[2] / "cad" / "schemas" / "truth.schema.json"
EXAM = ExamIdentity("1.2.3", "PHANTOM-T", "PHT1", "20261202", "090000", 50)


def _breast(density: DensityCategory, seed: int) -> BreastModel:
    rng = np.random.default_rng(seed)
    breast = sample_breast(rng, "L", density)
    breast.gland_volume = gland_volume(breast, rng)
    return breast


def _round_mass(breast: BreastModel, diameter_mm: float, contrast: float) -> Lesion:
    """A round mass half-way between chest wall and nipple, on the breast axis."""
    r = diameter_mm / 2
    return Lesion("T1", LesionType.MASS, np.array([0.5 * breast.depth_mm, 0.0, 0.0]), diameter_mm,
                  MassShape.ROUND, parts=((np.zeros(3), np.full(3, r), np.eye(3)),), contrast=contrast)


def _render(breast: BreastModel, seed: int) -> render.RenderedView:
    return render_view(breast, "CC", 0.2, np.random.default_rng(seed))


def _measure(view: render.RenderedView) -> dict[str, Any]:
    dataset = build_dataset(view, EXAM, "1.2.3.1", "1.2.3.1.1", 1)
    image = image_from_dataset(dataset, Path("T.dcm"))
    return {k: v.to_dict() for k, v in measure_view(image, dataset, view.stored, view.breast_mask,
                                                     view.lesion_signals, view.boxes).items()}


@pytest.mark.req("SRS-PHA-005")
def test_recorded_signal_is_the_difference_to_a_lesion_free_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without quantum noise, the view minus its lesion-free twin is the recorded signal."""
    monkeypatch.setattr(render, "PHOTONS_PER_MM2", 1e13)
    breast = _breast(DensityCategory.B, 5)
    breast.lesions = [_round_mass(breast, 12.0, 1.0)]
    with_lesion = _render(breast, 9)
    twin = _render(replace(breast, lesions=[]), 9)
    difference = with_lesion.stored.astype(np.float64) - twin.stored.astype(np.float64)
    signal = with_lesion.lesion_signals["T1"].full(with_lesion.stored.shape)
    peak = float(signal.max())
    assert peak > 20  # a visible signal in stored values, so the comparison means something
    assert np.abs(difference - signal).max() <= 1.0 + 0.03 * peak  # rounding, and the display gain
    assert twin.lesion_signals == {}


@pytest.mark.req("SRS-PHA-005")
def test_obvious_mass_is_visible_and_a_faint_one_is_not() -> None:
    fatty = _breast(DensityCategory.A, 11)
    fatty.lesions = [_round_mass(fatty, 18.0, 3.0)]
    view = _render(fatty, 3)
    stored = view.stored.copy()
    obvious = _measure(view)["T1"]
    assert obvious["visible"] and min(obvious["rank"].values()) == 1 and obvious["snr"] > 3
    assert np.array_equal(view.stored, stored)  # measuring never changes the image
    dense = _breast(DensityCategory.D, 12)
    dense.lesions = [_round_mass(dense, 10.0, 0.05)]
    faint = _measure(_render(dense, 4))["T1"]
    assert not faint["visible"] and min(faint["rank"][f] for f in FORMS) > 2 and faint["snr"] < obvious["snr"]


@pytest.mark.req("SRS-PHA-005", "SRS-PHA-002")
def test_truth_records_detectability_and_old_truth_still_loads(truth: dict[str, Any], tmp_path: Path) -> None:
    schema = json.loads(SCHEMA.read_text())
    views = [v for exam in truth["exams"] for lesion in exam["lesions"] for v in lesion["views"]]
    assert views and all("detectability" in v for v in views)
    for view in views:
        record = view["detectability"]
        assert record["visible"] == (min(record["rank"].values()) <= 2)
    old = copy.deepcopy(truth)
    old["schema_version"] = "1.0"
    for exam in old["exams"]:
        for lesion in exam["lesions"]:
            for view in lesion["views"]:
                view.pop("detectability")
    jsonschema.validate(old, schema)
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_truth(tmp_path / "old.json").schema_version == "1.0"
    broken = copy.deepcopy(truth)
    next(v for exam in broken["exams"] for lesion in exam["lesions"] for v in lesion["views"])[
        "detectability"]["rank"]["raw"] = 0
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(EvaluationInputError, match="detectability"):
        load_truth(tmp_path / "broken.json")
