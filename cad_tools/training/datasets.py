"""Training datasets in their own published layouts, reduced to one annotation record.

Each loader returns :class:`AnnotatedImage` records: a DICOM file, the mass boxes on it in
original image pixels, and the header facts a dataset keeps outside its DICOM files (CBIS-DDSM
has no pixel spacing or view codes in its headers; the CSVs say which breast and view).
Only masses are positives. Other findings (calcifications, asymmetries, ...) are recorded as
``other_boxes``: training treats them as background (the product marks masses only) and
evaluation excludes them, so a mark on one is neither a hit nor a false positive.
"""

from __future__ import annotations

import ast
import csv
import json
import plistlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

Box = tuple[float, float, float, float]
FORMATS = ("phantom", "cbis-ddsm", "vindr-mammo", "inbreast")
#: DDSM films were digitised at 42-50 micrometres; CBIS-DDSM headers carry no spacing.
CBIS_DEFAULT_SPACING_MM = 0.05


class DatasetError(ValueError):
    """A dataset folder that does not have the layout its format promises."""


@dataclass(frozen=True)
class AnnotatedImage:
    """One training image: where it is, its mass boxes, and header facts kept elsewhere."""

    path: Path
    boxes: tuple[Box, ...]
    source: str
    laterality: str | None = None
    view: str | None = None
    spacing_mm: float | None = None
    other_boxes: tuple[Box, ...] = field(default_factory=tuple)


def load_dataset(fmt: str, root: Path, split: str | None = None, **options: float) -> list[AnnotatedImage]:
    """Dispatch on ``fmt`` (one of :data:`FORMATS`)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder does not exist")
    if fmt == "phantom":
        return load_phantom(root, min_mass_mm=float(options.get("min_mass_mm", 0.0)))
    if fmt == "cbis-ddsm":
        return load_cbis_ddsm(root, spacing_mm=float(options.get("spacing_mm", CBIS_DEFAULT_SPACING_MM)))
    if fmt == "vindr-mammo":
        return load_vindr(root, split)
    if fmt == "inbreast":
        return load_inbreast(root)
    raise DatasetError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")


def load_phantom(root: Path, min_mass_mm: float = 0.0) -> list[AnnotatedImage]:
    """`cad phantom` output: DIR/truth.json and the DICOM files it names. Masses smaller than
    ``min_mass_mm`` join the other findings (not positives, ignored by validation), so that a
    detector meant for masses of 8 mm and more does not learn to mark specks."""
    truth_path = root / "truth.json"
    if not truth_path.is_file():
        raise DatasetError(f"{root}: no truth.json (not a `cad phantom` folder)")
    truth = json.loads(truth_path.read_text())
    out = []
    for exam in truth["exams"]:
        masses: dict[str, list[Box]] = {}
        others: dict[str, list[Box]] = {}
        for lesion in exam["lesions"]:
            is_target = lesion["type"] == "mass" and float(lesion["diameter_mm"]) >= min_mass_mm
            target = masses if is_target else others
            for view in lesion["views"]:
                target.setdefault(view["sop_instance_uid"], []).append(tuple(view["box"]))
        for image in exam["images"]:
            uid = image["sop_instance_uid"]
            out.append(
                AnnotatedImage(
                    root / image["path"],
                    tuple(masses.get(uid, [])),
                    "phantom",
                    other_boxes=tuple(others.get(uid, [])),
                )
            )
    return out


def _mask_box(path: Path) -> Box | None:
    mask = pydicom.dcmread(path).pixel_array
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def _shape(path: Path) -> tuple[int, int]:
    header = pydicom.dcmread(path, stop_before_pixels=True)
    return int(header.Rows), int(header.Columns)


def _cbis_file(root: Path, relative: str, want_shape: tuple[int, int] | None = None) -> Path:
    """The file a CBIS-DDSM CSV names; TCIA downloads rename files, so fall back to its folder."""
    relative = relative.strip().strip('"')
    exact = root / relative
    if exact.is_file() and (want_shape is None or _shape(exact) == want_shape):
        return exact
    folder = root / relative.split("/")[0]
    candidates = sorted(folder.rglob("*.dcm")) if folder.is_dir() else []
    if want_shape is not None:
        # some CBIS-DDSM rows swap the cropped-image and ROI-mask paths: the mask is the file
        # with the full image's size
        candidates = [p for p in candidates if _shape(p) == want_shape]
    if len(candidates) != 1:
        raise DatasetError(f"{exact}: file named in the CSV not found ({len(candidates)} candidates)")
    return candidates[0]


def load_cbis_ddsm(root: Path, spacing_mm: float = CBIS_DEFAULT_SPACING_MM) -> list[AnnotatedImage]:
    """CBIS-DDSM: mass description CSVs (``mass_case_description_*.csv``) + ROI mask DICOMs."""
    csvs = sorted(root.glob("mass_case_description*.csv"))
    if not csvs:
        raise DatasetError(f"{root}: no mass_case_description*.csv (CBIS-DDSM layout)")
    images: dict[Path, dict] = {}
    for csv_path in csvs:
        with csv_path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                image = _cbis_file(root, row["image file path"])
                mask = _cbis_file(root, row["ROI mask file path"], want_shape=_shape(image))
                box = _mask_box(mask)
                entry = images.setdefault(
                    image,
                    {"lat": row["left or right breast"].strip().upper()[:1],
                     "view": row["image view"].strip().upper(), "boxes": []},
                )
                if box is not None:
                    entry["boxes"].append(box)
    return [
        AnnotatedImage(path, tuple(e["boxes"]), "cbis-ddsm", e["lat"], e["view"], spacing_mm)
        for path, e in sorted(images.items())
    ]


def _categories(text: str) -> list[str]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = [text]
    return [str(v).strip().lower() for v in (value if isinstance(value, list) else [value])]


def load_vindr(root: Path, split: str | None = None) -> list[AnnotatedImage]:
    """VinDr-Mammo: finding_annotations.csv + images/<study_id>/<image_id>.dicom."""
    csv_path = root / "finding_annotations.csv"
    if not csv_path.is_file():
        raise DatasetError(f"{root}: no finding_annotations.csv (VinDr-Mammo layout)")
    images: dict[Path, dict] = {}
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if split and row.get("split", "").strip() != split:
                continue
            path = root / "images" / row["study_id"] / f"{row['image_id']}.dicom"
            entry = images.setdefault(
                path, {"lat": row["laterality"].strip(), "view": row["view_position"].strip(),
                       "boxes": [], "other": []},
            )
            cats = _categories(row["finding_categories"])
            if cats == ["no finding"] or not row.get("xmin"):
                continue
            box = tuple(float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            (entry["boxes"] if "mass" in cats else entry["other"]).append(box)
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: image named in finding_annotations.csv not found")
    return [
        AnnotatedImage(path, tuple(e["boxes"]), "vindr-mammo", e["lat"], e["view"],
                       other_boxes=tuple(e["other"]))
        for path, e in sorted(images.items())
    ]


_INBREAST_NAME = re.compile(r"^(?P<file>\d+)_[^_]+_MG_(?P<lat>[LR])_(?P<view>CC|ML|MLO)_ANON\.dcm$")
_POINT = re.compile(r"\(\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*(?:,[^)]*)?\)")


def _roi_box(points: Iterable[str]) -> Box | None:
    xy = [tuple(float(v) for v in m.groups()) for p in points if (m := _POINT.search(p))]
    if not xy:
        return None
    arr = np.asarray(xy)
    return (float(arr[:, 0].min()), float(arr[:, 1].min()),
            float(arr[:, 0].max() + 1), float(arr[:, 1].max() + 1))


def load_inbreast(root: Path) -> list[AnnotatedImage]:
    """INbreast: AllDICOMs/<file>_<id>_MG_<L|R>_<CC|ML>_ANON.dcm + AllXML/<file>.xml (plist)."""
    dicoms = root / "AllDICOMs"
    if not dicoms.is_dir():
        raise DatasetError(f"{root}: no AllDICOMs folder (INbreast layout)")
    out = []
    for path in sorted(dicoms.glob("*.dcm")):
        match = _INBREAST_NAME.match(path.name)
        if not match:
            continue
        boxes: list[Box] = []
        others: list[Box] = []
        xml = root / "AllXML" / f"{match['file']}.xml"
        if xml.is_file():
            with xml.open("rb") as handle:
                plist = plistlib.load(handle)
            for image in plist.get("Images", []):
                for roi in image.get("ROIs", []):
                    box = _roi_box(roi.get("Point_px", []))
                    if box is None:
                        continue
                    (boxes if str(roi.get("Name", "")).strip().lower() == "mass" else others).append(box)
        view = "MLO" if match["view"] in ("ML", "MLO") else "CC"
        out.append(AnnotatedImage(path, tuple(boxes), "inbreast", match["lat"], view,
                                  other_boxes=tuple(others)))
    return out
