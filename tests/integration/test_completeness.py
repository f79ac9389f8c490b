"""Per-breast completeness in the SR and the overlays (SRS-OUT-005, RC-030): an exam with one
breast absent is never reported as if the CAD found nothing there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from cad.report.sr import enum as sr

CAD = [sys.executable, "-m", "cad.cli"]


def _summary_and_completeness(path: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path)
    processing = next(c for c in ds.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "111017")
    parameters = [str(e.value) for e in ds.iterall()
                  if e.keyword == "TextValue" and str(e.value).startswith("completeness=")]
    return str(processing.ConceptCodeSequence[0].CodeValue), parameters[0]


@pytest.mark.req("SRS-OUT-005")
def test_an_exam_without_its_left_breast_says_so_in_every_output(exam_copy: Path, tmp_path: Path) -> None:
    for path in exam_copy.glob("L_*.dcm"):
        path.unlink()
    out = tmp_path / "out"
    ran = subprocess.run([*CAD, "detect", str(exam_copy), "--out", str(out)], capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 0, ran.stderr
    (study,) = [p for p in out.iterdir() if p.is_dir()]
    findings = json.loads((study / "findings.json").read_text())
    assert findings["exam_complete"] is False
    assert [(b["laterality"], b["status"]) for b in findings["breasts"]] == [("R", "analysed"), ("L", "absent")]
    code, completeness = _summary_and_completeness(study / "cad-sr.dcm")
    assert code in (sr.ProcessingSummary.NOT_ALL_SUCCEEDED_WITH_FINDINGS.value.value,
                    sr.ProcessingSummary.NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS.value.value)
    assert completeness == "completeness=R: analysed (CC, MLO); L: absent (CC, MLO missing)"
    overlays = sorted((study / "overlays").glob("*.png"))
    assert len(overlays) == 2
    for overlay in overlays:  # the exam line is drawn on a red band under the title
        rgb = np.asarray(Image.open(overlay).convert("RGB"))[:120]
        red = (rgb[..., 0] == 160) & (rgb[..., 1] == 0) & (rgb[..., 2] == 0)
        assert red.sum() > 500, overlay.name


@pytest.mark.req("SRS-OUT-005")
def test_a_complete_exam_says_it_is_complete(exam_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert subprocess.run([*CAD, "detect", str(exam_copy), "--out", str(out)], capture_output=True,
                          timeout=600).returncode == 0
    (study,) = [p for p in out.iterdir() if p.is_dir()]
    assert json.loads((study / "findings.json").read_text())["exam_complete"] is True
    _, completeness = _summary_and_completeness(study / "cad-sr.dcm")
    assert completeness == "completeness=R: analysed (CC, MLO); L: analysed (CC, MLO)"
    for overlay in (study / "overlays").glob("*.png"):
        rgb = np.asarray(Image.open(overlay).convert("RGB"))[:120]
        assert not ((rgb[..., 0] == 160) & (rgb[..., 1] == 0) & (rgb[..., 2] == 0)).any()
