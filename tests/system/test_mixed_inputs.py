"""One rule for what is not a mammogram, and one way of saying what was not analysed, in every
driver (SRS-OUT-006, SRS-OUT-002): `cad detect`, `cad batch` and `cad serve --watch` on the same
folder of mixed inputs (an exam with a damaged view, the product's own earlier SR and
presentation state, a CT image, a file that is not DICOM) say the same thing about each file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

CAD = [sys.executable, "-m", "cad.cli"]
#: a line naming a file that is not part of any result: `skipped:` or `not analysed:`, path, reason
LINE = re.compile(r"(skipped|not analysed): (/\S+): (.+)$")


def _said(output: str) -> set[tuple[str, str, str]]:
    """(kind, path, reason) of every per-file line, wherever it sits in a log line."""
    return {m.groups() for line in output.splitlines() if (m := LINE.search(line))}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, mass_phantom_dir: Path) -> dict[str, Path]:
    """The folder, and the files in it that a driver must name."""
    root = tmp_path_factory.mktemp("mixed") / "inbox"
    exam = root / "exam"
    shutil.copytree(mass_phantom_dir / "exam00000", exam)
    damaged = exam / "L_MLO.dcm"
    ds = pydicom.dcmread(damaged)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(damaged, enforce_file_format=True)
    earlier = root / "earlier-results"  # an output folder given back as input
    ran = subprocess.run([*CAD, "detect", str(mass_phantom_dir), "--out", str(earlier), "--no-overlays"],
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    ct = Dataset()
    ct.file_meta = FileMetaDataset()
    ct.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ct.SOPClassUID, ct.SOPInstanceUID, ct.Modality = CTImageStorage, "2.25.1001", "CT"
    ct.StudyInstanceUID, ct.SeriesInstanceUID = "2.25.1002", "2.25.1003"
    (root / "ct").mkdir()
    ct.save_as(root / "ct" / "ct.dcm", enforce_file_format=True)
    (root / "broken.dcm").write_bytes(b"not DICOM at all")
    (study,) = [p for p in earlier.iterdir() if p.is_dir()]
    return {"root": root, "damaged": damaged, "ct": root / "ct" / "ct.dcm", "broken": root / "broken.dcm",
            "sr": study / "cad-sr.dcm", "pr": study / "cad-pr.dcm"}


def _expected(files: dict[str, Path]) -> set[tuple[str, str, str]]:
    return {("skipped", str(files["ct"]), "not a mammogram: Modality is 'CT' (expected 'MG')"),
            ("skipped", str(files["sr"]), "not a mammogram: Modality is 'SR' (expected 'MG')"),
            ("skipped", str(files["pr"]), "not a mammogram: Modality is 'PR' (expected 'MG')"),
            ("not analysed", str(files["broken"]), "not a DICOM file (no DICM preamble or header)")}


def _damaged_line(said: set[tuple[str, str, str]], files: dict[str, Path]) -> set[tuple[str, str, str]]:
    return {s for s in said if s[1] == str(files["damaged"]) and s[0] == "not analysed"
            and s[2].startswith("truncated pixel data")}


def _check_sr(folder: Path, mammograms: set[str]) -> None:
    """The SR references the exam's mammograms, and nothing else, as images; dsrdump reads it."""
    sr = pydicom.dcmread(folder / "cad-sr.dcm")
    evidence = {ref.ReferencedSOPInstanceUID for item in sr.CurrentRequestedProcedureEvidenceSequence
                for series in item.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert evidence == mammograms
    dump = subprocess.run(["dsrdump", str(folder / "cad-sr.dcm")], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0 and "E:" not in dump.stderr, dump.stderr


@pytest.mark.slow
@pytest.mark.req("SRS-OUT-006", "SRS-OUT-002", "SRS-BAT-001", "SRS-SVC-001")
def test_detect_batch_and_serve_say_the_same_of_each_file(mixed: dict[str, Path], tmp_path: Path) -> None:
    root = mixed["root"]
    mammograms = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                  for p in (root / "exam").glob("*.dcm")}
    expected = _expected(mixed)

    detect = subprocess.run([*CAD, "detect", str(root), "--out", str(tmp_path / "detect"), "--no-overlays"],
                            capture_output=True, text=True, timeout=600)
    assert detect.returncode == 5, detect.stderr  # analysed, but not every image: incomplete
    console = re.sub(r"\s+", " ", detect.stdout)  # the console explains what it counts
    assert "CAD marks: findings scoring ≥ 0.116 (the operating point)" in console
    assert "candidates: findings below 0.116, kept in findings.json for performance analysis only" in console
    said = _said(detect.stderr)
    assert said - _damaged_line(said, mixed) == expected and _damaged_line(said, mixed)
    studies = [p for p in (tmp_path / "detect").iterdir() if p.is_dir()]
    assert len(studies) == 1, "no study, and no SR, for the CT image"
    _check_sr(studies[0], mammograms)
    findings = json.loads((studies[0] / "findings.json").read_text())
    assert sorted(i["status"] for i in findings["images"]) == ["analyzed"] * 3 + ["not_analyzed"]
    listed = json.loads((tmp_path / "detect" / "not_analysed.json").read_text())
    assert {(r["file"], r["code"]) for r in listed} == {
        (str(mixed["broken"]), "not_dicom"), (str(mixed["ct"]), "not_mammography"),
        (str(mixed["sr"]), "not_mammography"), (str(mixed["pr"]), "not_mammography")}

    batch = subprocess.run([*CAD, "batch", str(root), "--out", str(tmp_path / "batch")], capture_output=True,
                           text=True, timeout=600)
    assert batch.returncode == 5, batch.stderr
    said = _said(batch.stderr)
    assert said - _damaged_line(said, mixed) == expected and _damaged_line(said, mixed)
    report = json.loads((tmp_path / "batch" / "batch-report.json").read_text())
    assert report["studies_incomplete_this_run"] == 1 and report["incomplete_studies"][0]["reason"].startswith(
        "1 image not analysed: truncated pixel data")
    assert {f["file"] for f in report["files_not_mammograms"]} == {str(mixed[k]) for k in ("ct", "sr", "pr")}
    assert [f["file"] for f in report["files_not_analysed"]] == [str(mixed["broken"])]
    _check_sr(tmp_path / "batch" / studies[0].name, mammograms)

    watched = tmp_path / "watched"
    shutil.copytree(root, watched)
    serve = subprocess.run([*CAD, "-v", "serve", "--state", str(tmp_path / "state"), "--watch", str(watched),
                            "--quiet-seconds", "0", "--poll-seconds", "0.5", "--once"],
                           capture_output=True, text=True, timeout=600)
    assert serve.returncode == 5, serve.stderr
    moved = {k: watched / v.relative_to(root) for k, v in mixed.items() if k != "root"}
    said = _said(serve.stderr)
    assert said - _damaged_line(said, moved) == _expected(moved) and _damaged_line(said, moved)
    _check_sr(watched / "exam" / "cad-results" / studies[0].name, mammograms)
