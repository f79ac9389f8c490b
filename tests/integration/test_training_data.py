"""Training-data loaders on small files written in each public dataset's own layout."""

from __future__ import annotations

import csv
import plistlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cad.detect.config import DetectorConfig
from cad_tools.training.datasets import DatasetError, load_dataset
from cad_tools.training.prepare import PreparedImage, prepare_one

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _lesion_view(truth: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(exam, image, view box entry) of the first mass in the phantom truth."""
    for exam in truth["exams"]:
        for lesion in exam["lesions"]:
            if lesion["type"] == "mass":
                view = lesion["views"][0]
                image = next(i for i in exam["images"] if i["sop_instance_uid"] == view["sop_instance_uid"])
                return exam, image, view
    raise AssertionError("phantom fixture has no mass")


def _strip_to_film_scan(ds: pydicom.Dataset) -> None:
    """Make a phantom look like a CBIS-DDSM file: no view, laterality or spacing; SC class."""
    for keyword in ("ViewCodeSequence", "ViewPosition", "ImageLaterality", "Laterality",
                    "PixelSpacing", "ImagerPixelSpacing", "PatientOrientation"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE


def _mask_dataset(template: pydicom.Dataset, box: list[int]) -> pydicom.Dataset:
    ds = template.copy()
    mask = np.zeros((int(ds.Rows), int(ds.Columns)), dtype=np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = mask.tobytes()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds


@pytest.mark.req("SRS-TRN-001")
def test_cbis_ddsm_layout(tmp_path: Path, mass_phantom_dir: Path, mass_truth: dict[str, Any]) -> None:
    exam, image, view = _lesion_view(mass_truth)
    ds = pydicom.dcmread(mass_phantom_dir / image["path"])
    _strip_to_film_scan(ds)
    side = "LEFT" if image["laterality"] == "L" else "RIGHT"
    case = f"Mass-Training_P_00001_{side}_{image['view']}"
    uid_a, uid_b = "1.3.6.1.4.1.9590.100.1.2.1", "1.3.6.1.4.1.9590.100.1.2.2"
    # TCIA downloads rename the files the CSV names: the loader must find them in the folder
    image_dir = tmp_path / case / uid_a / uid_b
    image_dir.mkdir(parents=True)
    ds.save_as(image_dir / "1-1.dcm", enforce_file_format=True)
    roi_dir = tmp_path / f"{case}_1" / uid_a / uid_b
    roi_dir.mkdir(parents=True)
    _mask_dataset(ds, view["box"]).save_as(roi_dir / "1-2.dcm", enforce_file_format=True)
    cropped = ds.copy()
    cropped.Rows, cropped.Columns = 64, 64
    cropped.PixelData = np.zeros((64, 64), dtype=np.uint16).tobytes()
    cropped.save_as(roi_dir / "1-1.dcm", enforce_file_format=True)  # the cropped ROI image
    with (tmp_path / "mass_case_description_train_set.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "breast_density", "left or right breast", "image view",
                         "abnormality id", "abnormality type", "mass shape", "mass margins",
                         "assessment", "pathology", "subtlety", "image file path",
                         "cropped image file path", "ROI mask file path"])
        writer.writerow(["P_00001", "2", side, image["view"], "1", "mass", "OVAL", "CIRCUMSCRIBED",
                         "4", "MALIGNANT", "4", f"{case}/{uid_a}/{uid_b}/000000.dcm",
                         f"{case}_1/{uid_a}/{uid_b}/000000.dcm", f"{case}_1/{uid_a}/{uid_b}/000001.dcm\n"])
    items = load_dataset("cbis-ddsm", tmp_path)
    assert len(items) == 1
    item = items[0]
    assert item.boxes == (tuple(float(v) for v in view["box"]),)
    assert (item.laterality, item.view, item.spacing_mm) == (image["laterality"], image["view"], 0.05)
    prepared = prepare_one(item, DetectorConfig())
    assert isinstance(prepared, PreparedImage), prepared
    _assert_box_inside(prepared)


def _assert_box_inside(prepared: PreparedImage) -> None:
    height, width = prepared.array.shape
    (x0, y0, x1, y1), = prepared.boxes
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    inside = prepared.array[int(y0):int(y1), int(x0):int(x1)].astype(np.float32)
    assert inside.mean() > float(np.median(prepared.array)), "the mass should be denser than typical"


@pytest.mark.req("SRS-TRN-001")
def test_vindr_layout(tmp_path: Path, mass_phantom_dir: Path, mass_truth: dict[str, Any]) -> None:
    exam, image, view = _lesion_view(mass_truth)
    other = next(i for i in exam["images"] if i["sop_instance_uid"] != image["sop_instance_uid"])
    rows = []
    for entry, findings in ((image, ["Mass"]), (other, ["No Finding"])):
        study, image_id = "s" + exam["study_instance_uid"][-6:], "i" + entry["sop_instance_uid"][-8:]
        folder = tmp_path / "images" / study
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(mass_phantom_dir / entry["path"], folder / f"{image_id}.dicom")
        box = view["box"] if findings == ["Mass"] else ["", "", "", ""]
        rows.append([study, "series", image_id, entry["laterality"], entry["view"], entry["rows"],
                     entry["columns"], "BI-RADS 4", "DENSITY C", str(findings), "BI-RADS 4", *box, "training"])
    rows.append([*rows[0][:9], "['Suspicious Calcification']", "BI-RADS 4", 10, 10, 30, 30, "training"])
    with (tmp_path / "finding_annotations.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_id", "series_id", "image_id", "laterality", "view_position", "height",
                         "width", "breast_birads", "breast_density", "finding_categories",
                         "finding_birads", "xmin", "ymin", "xmax", "ymax", "split"])
        writer.writerows(rows)
    items = {i.path.name: i for i in load_dataset("vindr-mammo", tmp_path, split="training")}
    assert len(items) == 2
    mass = next(i for i in items.values() if i.boxes)
    normal = next(i for i in items.values() if not i.boxes)
    assert mass.boxes == (tuple(float(v) for v in view["box"]),)
    assert mass.other_boxes == ((10.0, 10.0, 30.0, 30.0),)
    assert normal.other_boxes == ()
    assert load_dataset("vindr-mammo", tmp_path, split="test") == []
    prepared = prepare_one(mass, DetectorConfig())
    assert isinstance(prepared, PreparedImage), prepared
    _assert_box_inside(prepared)


@pytest.mark.req("SRS-TRN-001")
def test_inbreast_layout(tmp_path: Path, mass_phantom_dir: Path, mass_truth: dict[str, Any]) -> None:
    exam, image, view = _lesion_view(mass_truth)
    (tmp_path / "AllDICOMs").mkdir()
    (tmp_path / "AllXML").mkdir()
    view_code = "ML" if image["view"] == "MLO" else "CC"
    name = f"20586908_6c613a14b80a8591_MG_{image['laterality']}_{view_code}_ANON.dcm"
    shutil.copy(mass_phantom_dir / image["path"], tmp_path / "AllDICOMs" / name)
    x0, y0, x1, y1 = view["box"]
    outline = [f"({x0}, {(y0 + y1) / 2})", f"({(x0 + x1) / 2}, {y0})", f"({x1 - 1}, {(y0 + y1) / 2})",
               f"({(x0 + x1) / 2}, {y1 - 1})"]
    rois = [{"Name": "Mass", "Point_px": outline, "NumberOfPoints": 4},
            {"Name": "Calcification", "Point_px": ["(40.5, 41.5)"], "NumberOfPoints": 1}]
    with (tmp_path / "AllXML" / "20586908.xml").open("wb") as handle:
        plistlib.dump({"Images": [{"ImageIndex": 0, "NumberOfROIs": 2, "ROIs": rois}]}, handle)
    items = load_dataset("inbreast", tmp_path)
    assert len(items) == 1
    item = items[0]
    assert item.boxes == ((float(x0), float(y0), float(x1), float(y1)),)
    assert item.other_boxes == ((40.5, 41.5, 41.5, 42.5),)
    assert (item.laterality, item.view) == (image["laterality"], image["view"])
    prepared = prepare_one(item, DetectorConfig())
    assert isinstance(prepared, PreparedImage), prepared
    _assert_box_inside(prepared)


@pytest.mark.req("SRS-TRN-001")
@pytest.mark.parametrize("fmt", ["phantom", "cbis-ddsm", "vindr-mammo", "inbreast"])
def test_wrong_layout_is_one_clear_error(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(DatasetError, match=str(tmp_path)):
        load_dataset(fmt, tmp_path)
