"""`cad phantom`: truth file, consistency across views, determinism, DICOM validity (SRS-PHA-*)."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pydicom
import pytest

from cad_tools.phantom.generate import PhantomConfig, _exam_breasts, generate

SCHEMA = Path(__file__).resolve().parents[2] / "cad" / "schemas" / "truth.schema.json"


@pytest.mark.req("SRS-PHA-002")
def test_truth_validates_and_boxes_lie_on_the_breast(phantom_dir: Path, truth: dict[str, Any]) -> None:
    jsonschema.validate(truth, json.loads(SCHEMA.read_text()))
    images = {i["sop_instance_uid"]: i for e in truth["exams"] for i in e["images"]}
    n_boxes = 0
    for exam in truth["exams"]:
        assert len(exam["images"]) == 4
        for lesion in exam["lesions"]:
            for view in lesion["views"]:
                image = images[view["sop_instance_uid"]]
                assert image["view"] == view["view"] and image["laterality"] == lesion["laterality"]
                x0, y0, x1, y1 = view["box"]
                assert 0 <= x0 < x1 <= image["columns"] and 0 <= y0 < y1 <= image["rows"]
                ds = pydicom.dcmread(phantom_dir / image["path"])
                cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
                assert ds.pixel_array[cy, cx] > 0.1 * float(ds.WindowCenter)  # tissue, not air
                n_boxes += 1
    assert n_boxes > 0


@pytest.mark.req("SRS-PHA-002")
def test_lesion_keeps_chest_wall_distance_between_views() -> None:
    """Across many exams, a lesion's distance from the chest wall agrees between CC and MLO."""
    rng_exams = [(_exam_breasts(np.random.default_rng([7, k]), PhantomConfig(normal_fraction=0), k))
                 for k in range(40)]
    checked = 0
    for breasts in rng_exams:
        for breast in breasts:
            for lesion in breast.lesions:
                cc = breast.view_geometry("CC").project(lesion.centre)
                mlo = breast.view_geometry("MLO").project(lesion.centre)
                assert abs(cc[0] - mlo[0]) < 1e-9  # same distance from the chest wall
                checked += 1
    assert checked > 30


@pytest.mark.req("SRS-PHA-002")
def test_rendered_boxes_agree_across_views(truth: dict[str, Any]) -> None:
    spacing = truth["pixel_spacing_mm"]
    images = {i["sop_instance_uid"]: i for e in truth["exams"] for i in e["images"]}
    pairs = 0
    for exam in truth["exams"]:
        for lesion in exam["lesions"]:
            if len(lesion["views"]) != 2:
                continue
            distances = []
            for view in lesion["views"]:
                image = images[view["sop_instance_uid"]]
                x0, _, x1, _ = view["box"]
                centre = (x0 + x1) / 2
                # distance from the chest-wall edge (left for L, right for R)
                d = centre if lesion["laterality"] == "L" else image["columns"] - centre
                distances.append(d * spacing)
            assert abs(distances[0] - distances[1]) <= 3.0 + lesion["diameter_mm"] / 2
            pairs += 1
    assert pairs >= 1


@pytest.mark.req("SRS-PHA-001")
def test_composition_over_a_larger_set() -> None:
    config = PhantomConfig()
    densities: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    shapes: Counter[str] = Counter()
    sizes: list[float] = []
    one_view = normal = 0
    for k in range(300):
        breasts = _exam_breasts(np.random.default_rng([3, k]), config, k)
        densities[breasts[0].density.value] += 1
        lesions = [l for b in breasts for l in b.lesions]
        normal += not lesions
        for lesion in lesions:
            kinds[lesion.type.value] += 1
            one_view += len(lesion.visible_in) == 1
            if lesion.shape is not None:
                shapes[lesion.shape.value] += 1
                sizes.append(lesion.diameter_mm)
    assert set(densities) == {"A", "B", "C", "D"}
    assert set(kinds) == {"mass", "calcification_cluster"}
    assert set(shapes) == {"round", "oval", "irregular", "spiculated"}
    assert 4.0 <= min(sizes) < 6.0 and 25.0 < max(sizes) <= 30.0
    assert 50 < normal < 150 and one_view > 10


@pytest.mark.req("SRS-PHA-003")
def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    generate(tmp_path / "a", exams=1, seed=5)
    generate(tmp_path / "b", exams=2, seed=5)
    generate(tmp_path / "c", exams=2, seed=5, workers=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.dcm"))
    assert len(files) == 4
    for rel in files:
        assert filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False)
    both = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.dcm"))
    assert len(both) == 8
    for rel in both:
        assert filecmp.cmp(tmp_path / "b" / rel, tmp_path / "c" / rel, shallow=False)
    assert (tmp_path / "b" / "truth.json").read_bytes() == (tmp_path / "c" / "truth.json").read_bytes()
    a = json.loads((tmp_path / "a" / "truth.json").read_text())["exams"][0]
    b = json.loads((tmp_path / "b" / "truth.json").read_text())["exams"][0]
    assert a == b


@pytest.mark.req("SRS-PHA-004")
@pytest.mark.skipif(shutil.which("dciodvfy") is None,
                    reason="dciodvfy (Debian dicom3tools) not installed; `make test` installs it")
def test_every_file_passes_dciodvfy(phantom_dir: Path) -> None:
    files = sorted(phantom_dir.rglob("*.dcm"))
    assert len(files) == 8
    for path in files:
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        report = run.stdout + run.stderr
        assert "MammographyImageForPresentation" in report
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


@pytest.mark.req("SRS-PHA-004")
def test_patient_is_synthetic(exam_files: list[Path]) -> None:
    ds = pydicom.dcmread(exam_files[0], stop_before_pixels=True)
    assert str(ds.PatientName) == "PHANTOM^SYNTHETIC"
    assert str(ds.PatientID).startswith("PHANTOM-")
    assert ds.PatientBirthDate == ""
