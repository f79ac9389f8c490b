"""Seed corpora for the fuzz targets: small phantom DICOM files in every transfer syntax ingest
decodes, the bundled reader studies (CSV, iMRMC, JAFROC workbook), an outcomes file and a
findings.json. Seeds are kept small (an 96 x 80 crop of a phantom view) so that the fuzzer
spends its executions on parsing, not on copying megabytes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from cad_tools.phantom.generate import exam_files_of, generate

ROOT = Path(__file__).resolve().parents[2]
READER_STUDY = ROOT / "tests" / "data" / "reader-study"
#: DCMTK encoders for the syntaxes pydicom cannot write (tool, option, transfer syntax name)
DCMTK = (("dcmcjpls", "--encode-lossless", "jpegls-lossless"), ("dcmcjpls", "--encode-nearlossless", "jpegls-near"),
         ("dcmcjpeg", "--encode-lossless-sv1", "jpeg-lossless-sv1"), ("dcmcjpeg", "--encode-lossless", "jpeg-lossless"))


def _small(source: Path, out: Path) -> Path:
    ds = pydicom.dcmread(source)
    pixels = ds.pixel_array[:96, :80].copy()
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(out, enforce_file_format=True)
    return out


def dicom_seeds(folder: Path) -> list[Path]:
    """Small phantom files in every transfer syntax ingest decodes that an encoder here writes."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), exams=1, seed=77)
        sources = exam_files_of(Path(tmp))[0]
        base = _small(sources[0], folder / "explicit-le.dcm")
        _small(sources[1], folder / "explicit-le-mlo.dcm")
    written = [base, folder / "explicit-le-mlo.dcm"]
    for name, option in (("implicit-le", "+ti"), ("explicit-be", "+tb"), ("deflated", "+td")):
        if shutil.which("dcmconv"):  # DCMTK converts between the uncompressed syntaxes
            path = folder / f"{name}.dcm"
            subprocess.run(["dcmconv", option, str(base), str(path)], check=True, capture_output=True)
            written.append(path)
    for name, syntax in (("rle", RLELossless), ("jpeg2000-lossless", JPEG2000Lossless)):
        ds = pydicom.dcmread(base)
        ds.compress(syntax)
        path = folder / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    for tool, option, name in DCMTK:
        if shutil.which(tool):
            path = folder / f"{name}.dcm"
            subprocess.run([tool, option, str(base), str(path)], check=True, capture_output=True)
            written.append(path)
    return written


def write_seeds(out: Path) -> dict[str, Path]:
    """Every target's seed folder under ``out``."""
    folders = {name: out / name for name in ("ingest", "reader-study", "jafroc", "outcomes", "findings")}
    dicom_seeds(folders["ingest"])
    folders["reader-study"].mkdir(parents=True, exist_ok=True)
    for name in ("vandyke_roc.csv", "vandyke_roc.imrmc"):
        shutil.copy(READER_STUDY / name, folders["reader-study"] / name)
    folders["jafroc"].mkdir(parents=True, exist_ok=True)
    shutil.copy(READER_STUDY / "froc_example.xlsx", folders["jafroc"] / "froc_example.xlsx")
    folders["outcomes"].mkdir(parents=True, exist_ok=True)
    (folders["outcomes"] / "outcomes.csv").write_text(
        "StudyInstanceUID,assessment,recall,pathology,laterality,location\n"
        "1.2.826.0.1.3680043.2.1125.9.1,BI-RADS 4,yes,malignant,L,upper outer\n"
        "1.2.826.0.1.3680043.2.1125.9.2,BI-RADS 1,no,,,\n")
    folders["findings"].mkdir(parents=True, exist_ok=True)
    _findings_seed(folders["findings"] / "findings.json")
    return folders


def _findings_seed(path: Path) -> None:
    from cad.io.image import Laterality, View
    from cad.result.findings_json import write_result
    from cad.result.model import ANALYZED, Algorithm, Finding, FindingType, FindingView, ImageStatus, StudyResult

    uids = {(lat, view): f"1.2.3.{k}" for k, (lat, view) in enumerate(
        (lat, view) for lat in (Laterality.RIGHT, Laterality.LEFT) for view in (View.CC, View.MLO))}
    images = tuple(ImageStatus(uid, lat, view, ANALYZED, None, f"{lat.value}_{view.value}.dcm")
                   for (lat, view), uid in uids.items())
    finding = Finding("F001", Laterality.RIGHT, FindingType.MASS, 0.8,
                      (FindingView(uids[(Laterality.RIGHT, View.CC)], View.CC, (10, 20, 30, 40), 0.7),
                       FindingView(uids[(Laterality.RIGHT, View.MLO)], View.MLO, (12, 22, 32, 42), 0.6)), 1.5)
    write_result(StudyResult("1.2.3", Algorithm("mammo-cad", "0.3.0", "ab" * 32, "seed", "cd" * 32), 0.5, images,
                             (finding,)), path)
