"""`cad deidentify` on a phantom exam: identifiers gone or replaced, UIDs and dates remapped
consistently from the secret, burned-in labels cleaned, pixels of the breast unchanged, and
the outputs still valid DICOM that `cad detect` analyses (SRS-SEC-003)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

CAD = [sys.executable, "-m", "cad.cli"]
#: attributes of the phantom's synthetic patient and study that identify them
IDENTIFYING = ("PatientName", "PatientID", "AccessionNumber", "StudyID", "InstitutionName", "StudyInstanceUID",
               "SeriesInstanceUID", "SOPInstanceUID")


def _values(ds: Dataset) -> set[str]:
    """Every text value in a dataset, sequences included."""
    found: set[str] = set()
    for element in ds.iterall():
        if element.VR in ("SQ", "OB", "OW", "OF", "UN") or element.value is None:
            continue
        values = element.value if isinstance(element.value, pydicom.multival.MultiValue) else [element.value]
        found |= {str(v) for v in values if str(v)}
    return found


def _export(inputs: list[Path], out: Path, secret: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAD, "deidentify", *map(str, inputs), "--out", str(out), "--secret-file", str(secret)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.req("SRS-SEC-003")
def test_a_phantom_exam_leaves_the_site_without_its_identity(exam_files: list[Path], tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("site-secret-0123456789\n")
    out = tmp_path / "export"
    ran = _export(exam_files, out, secret)
    assert ran.returncode == 0, ran.stderr
    originals = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in exam_files}
    identifying = {str(o.get(k)) for o in originals.values() for k in IDENTIFYING if o.get(k)}
    outputs = sorted(out.rglob("*.dcm"))
    assert len(outputs) == 4
    exported = [pydicom.dcmread(p) for p in outputs]
    for ds in exported:
        assert not identifying & _values(ds), identifying & _values(ds)
        assert ds.PatientIdentityRemoved == "YES" and ds.BurnedInAnnotation == "NO"
        assert {i.CodeValue for i in ds.DeidentificationMethodCodeSequence} == {"113100", "113101", "113107", "113108"}
        assert not any(element.tag.is_private for element in ds.iterall())
        assert str(ds.PatientName) == f"DEIDENTIFIED^{ds.PatientID}", "a placeholder, never a realistic name"
        assert all(len(v) <= 64 for v in ds.DeidentificationMethod), "each value within LO's 64 characters"
        assert any(v.endswith(f"dicognito {version('dicognito')}") for v in ds.DeidentificationMethod), "version whole"
    assert len({ds.StudyInstanceUID for ds in exported}) == 1 and len({ds.PatientID for ds in exported}) == 1
    first = next(iter(originals.values()))
    shift = {(date.fromisoformat(_iso(ds.StudyDate)) - date.fromisoformat(_iso(first.StudyDate))).days for ds in exported}
    assert len(shift) == 1 and shift != {0}, "dates shifted, all by one offset"
    assert exported[0].PatientSex == first.PatientSex, "patient characteristics retained"

    # pixels: the breast unchanged, the burned-in view label (full-scale text in the top rows) gone
    from cad.io.dicom_reader import image_from_dataset
    from cad.preprocess.mask import segment_breast

    by_position = {(str(o.ImageLaterality), str(o.ViewPosition)): o for o in originals.values()}
    for ds in exported:
        original = by_position[(str(ds.ImageLaterality), str(ds.ViewPosition))]
        before, after = original.pixel_array, ds.pixel_array
        image = image_from_dataset(original, Path("original.dcm"))
        mask = segment_breast(image.pixels, image.spacing.mean_mm)
        inside = np.repeat(np.repeat(mask.mask, mask.factor, 0), mask.factor, 1)[:before.shape[0], :before.shape[1]]
        assert np.array_equal(before[inside], after[inside[:after.shape[0], :after.shape[1]]])
        top = before.shape[0] // 5
        label = (before[:top] == before.max()) & ~inside[:top]  # the view label: full-scale text off the breast
        assert label.sum() > 50 and not (after[:top][label] == before.max()).any(), "burned-in label cleaned"

    report = json.loads((out / "deidentify-report.json").read_text())
    assert report["exported"] == 4 and not report["refused"]
    assert not any(p.name in json.dumps(report) for p in exam_files), "no source names leave in the report"

    # valid DICOM that the device still analyses
    for path in outputs:
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert "Error" not in checked.stderr, checked.stderr[-1500:]
    detected = subprocess.run([*CAD, "detect", str(out), "--out", str(tmp_path / "detect"), "--no-overlays"],
                              capture_output=True, text=True, timeout=600)
    assert detected.returncode == 0, detected.stderr
    (study,) = [p for p in (tmp_path / "detect").iterdir() if p.is_dir()]
    statuses = [i["status"] for i in json.loads((study / "findings.json").read_text())["images"]]
    assert statuses == ["analyzed"] * 4

    # the same secret gives the same files; another secret other identifiers
    again = tmp_path / "again"
    assert _export(exam_files, again, secret).returncode == 0
    assert {p.relative_to(again): p.read_bytes() for p in again.rglob("*.dcm")} == {
        p.relative_to(out): p.read_bytes() for p in outputs}
    other_secret = tmp_path / "other"
    other_secret.write_text("another-secret-9876543210\n")
    other = tmp_path / "other-export"
    assert _export(exam_files, other, other_secret).returncode == 0
    assert {p.parent.name for p in other.rglob("*.dcm")} != {p.parent.name for p in outputs}


def _iso(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}"


@pytest.mark.req("SRS-SEC-003")
def test_what_cannot_be_checked_is_refused_with_the_reason(exam_files: list[Path], tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("short\n")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(exam_files[0], inputs / "mg.dcm")
    (inputs / "broken.dcm").write_text("not DICOM")  # (.txt files in a folder are sidecars, skipped)
    ct = pydicom.dcmread(exam_files[0])
    ct.Modality = "CT"
    ct.save_as(inputs / "ct.dcm")
    refused = _export([inputs], tmp_path / "out", secret)
    assert refused.returncode == 2 and "at least 16 characters" in refused.stderr
    secret.write_text("long-enough-secret-value\n")
    ran = _export([inputs], tmp_path / "out", secret)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
    assert "broken.dcm: not exported" in ran.stderr and "ct.dcm: not exported: modality CT" in ran.stderr
    report = json.loads((tmp_path / "out" / "deidentify-report.json").read_text())
    assert report["exported"] == 1 and len(report["refused"]) == 2
