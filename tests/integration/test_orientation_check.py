"""Header orientation checked against the image (SRS-GEO-005, RC-032): a PatientOrientation that
contradicts the chest-wall side the pixels clearly show makes the image not analysed, recorded
in every output; an unclear image is analysed as found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cad.preprocess.mask import BreastMask
from cad.report.sr.reader import read_mammography_cad_sr

CAD = [sys.executable, "-m", "cad.cli"]


def _mask(cover_left: int, cover_right: int, rows: int = 100) -> BreastMask:
    mask = np.zeros((rows, 60), bool)
    mask[:cover_left, :30] = True
    mask[rows - cover_right:, 30:] = True
    return BreastMask(mask, 1, True, 0.1, mask.astype(float),
                      (float(mask[:, :2].any(axis=1).sum()) / rows, float(mask[:, -2:].any(axis=1).sum()) / rows))


@pytest.mark.req("SRS-GEO-005")
def test_a_chest_wall_is_clear_only_when_one_edge_dominates() -> None:
    assert _mask(80, 0).chest_wall_clear and _mask(0, 60).chest_wall_clear
    assert _mask(80, 30).chest_wall_clear  # a breast overlapping the far edge a little
    assert not _mask(60, 50).chest_wall_clear  # both edges alike
    assert not _mask(20, 0).chest_wall_clear  # too little of any edge


@pytest.mark.req("SRS-GEO-005")
def test_an_orientation_that_contradicts_the_image_is_not_analysed(exam_copy: Path, tmp_path: Path) -> None:
    target = sorted(exam_copy.glob("*CC*.dcm"))[0]
    ds = pydicom.dcmread(target)
    row, column = ds.PatientOrientation
    ds.PatientOrientation = ["P" if row == "A" else "A", column]
    ds.save_as(target, enforce_file_format=True)

    out = tmp_path / "out"
    ran = subprocess.run([*CAD, "detect", str(exam_copy), "--out", str(out)], capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 5, ran.stderr  # the other views are analysed; the result is incomplete
    assert f"not analysed: {target}: " in ran.stderr and "Traceback" not in ran.stderr
    (study,) = [p for p in out.iterdir() if p.is_dir()]
    images = {i["file"]: i for i in json.loads((study / "findings.json").read_text())["images"]}
    assert images[target.name]["status"] == "not_analyzed"
    assert "PatientOrientation" in images[target.name]["reason"]
    assert [i["status"] for name, i in images.items() if name != target.name] == ["analyzed"] * 3
    from_sr = {i.sop_instance_uid: i for i in read_mammography_cad_sr(study / "cad-sr.dcm").images}
    refused = from_sr[str(ds.SOPInstanceUID)]
    assert refused.status == "not_analyzed" and "PatientOrientation" in (refused.reason or "")
