"""Grayscale Softcopy Presentation State: marks, VOI, MONOCHROME1, validator, UIDs, rendering."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from highdicom.color import CIELabColor
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from cad.analysis.pipeline import AnalysedView, analyse_study
from cad.detect.locked import LockedModel, load_locked_model
from cad.io import load, read_image
from cad.io.uids import is_valid_uid, output_uids
from cad.report.gsps import build_presentation_state
from cad.result.findings_json import result_to_dict
from cad.result.model import StudyResult
from cad_tools.render import MAX_HEIGHT, render_presentation_state
from cad_torch.runtime import TorchRuntime

Analysis = tuple[StudyResult, list[AnalysedView]]
#: attributes highdicom sets to the time of creation
CREATION_TIMES = ("InstanceCreationDate", "InstanceCreationTime", "PresentationCreationDate",
                  "PresentationCreationTime", "ContributingEquipmentSequence")
LUT_BITS = 12


@pytest.fixture(scope="module")
def model() -> LockedModel:
    return load_locked_model()


@pytest.fixture(scope="module")
def mass_analysis(mass_phantom_dir: Path, model: LockedModel) -> Analysis:
    """The locked model run on the two-mass phantom exam (once for the module)."""
    (study,) = load([mass_phantom_dir]).studies
    return analyse_study(study, model, TorchRuntime(model, max_batch=1))


@pytest.fixture(scope="module")
def pr_file(mass_analysis: Analysis, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GSPS of the two-mass exam, written and ready to read back."""
    path = tmp_path_factory.mktemp("gsps") / "cad-pr.dcm"
    write(build(*mass_analysis), path)
    return path


def uids_of(findings: StudyResult, headers: list[Dataset]) -> dict[str, str]:
    return output_uids(findings.study_instance_uid, [str(h.SOPInstanceUID) for h in headers],
                       findings.algorithm.model_sha256, findings.algorithm.settings_sha256)


def build(findings: StudyResult, views: list[AnalysedView]) -> Dataset:
    headers = [v.image.header for v in views]
    return build_presentation_state(findings, headers, uids_of(findings, headers))


def write(pr: Dataset, path: Path) -> Dataset:
    """Save and read back, so the tests see what a receiver sees."""
    pr.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def variant(source: Path, modify: Callable[[Dataset], None], path: Path) -> Path:
    """A modified copy of a phantom file (same SOP Instance UID: the findings still apply)."""
    ds = pydicom.dcmread(source)
    modify(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def to_monochrome1(ds: Dataset) -> None:
    """Inverted stored values with the mirrored window: the same picture for a reader."""
    top = 2 ** int(ds.BitsStored) - 1
    ds.PixelData = (top - ds.pixel_array).astype("<u2").tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PresentationLUTShape = "INVERSE"
    ds.WindowCenter = top + 1 - float(ds.WindowCenter)


def to_lut(ds: Dataset) -> None:
    """Replace the window by the equivalent VOI LUT Sequence of 12-bit entries."""
    centre, width, entries = float(ds.WindowCenter), float(ds.WindowWidth), 2 ** int(ds.BitsStored)
    stored = np.arange(entries, dtype=np.float64)
    lut = np.clip((stored - (centre - 0.5)) / (width - 1) + 0.5, 0, 1) * (2**LUT_BITS - 1)
    item = Dataset()
    item.LUTDescriptor = [entries, 0, LUT_BITS]
    item.LUTData = np.rint(lut).astype("<u2").tobytes()
    ds.VOILUTSequence = Sequence([item])
    del ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction, ds.WindowCenterWidthExplanation


def gray(png: Path) -> np.ndarray:
    return np.asarray(Image.open(png).convert("L"), dtype=np.float64)


def applies(item: Dataset, uid: str) -> bool:
    refs = item.get("ReferencedImageSequence")
    return not refs or uid in {r.ReferencedSOPInstanceUID for r in refs}


def shown_marks(findings: StudyResult) -> Counter[tuple[str, tuple[float, ...]]]:
    """(image, box) of every mark readers see, from the findings.json form, at FL precision."""
    data = result_to_dict(findings)
    threshold = data["operating_point"]["threshold"]
    return Counter((v["sop_instance_uid"], tuple(float(np.float32(c)) for c in v["box"]))
                   for f in data["findings"] if f["score"] >= threshold for v in f["views"])


@pytest.mark.req("SRS-DCM-002")
def test_gsps_references_the_analysed_images_and_draws_the_marks(
    mass_analysis: Analysis, pr_file: Path
) -> None:
    findings, views = mass_analysis
    pr = pydicom.dcmread(pr_file)
    analysed = {i.sop_instance_uid for i in findings.images if i.status == "analyzed"}
    referenced = [i.ReferencedSOPInstanceUID
                  for s in pr.ReferencedSeriesSequence for i in s.ReferencedImageSequence]
    assert sorted(referenced) == sorted(analysed) and len(analysed) == 4
    assert pr.ContentLabel == "CAD_MARKS" and pr.Modality == "PR"
    expected = shown_marks(findings)
    below = {(v.sop_instance_uid, tuple(float(np.float32(round(c, 2))) for c in v.box))
             for f in findings.findings if f.score < findings.operating_threshold for v in f.views}
    assert expected and below, "the fixture exam should give findings above and below threshold"

    size = {v.image.sop_instance_uid: (v.image.shape[1], v.image.shape[0]) for v in views}
    groups = {g.GraphicGroupID: g.GraphicGroupLabel for g in pr.GraphicGroupSequence}
    scores = {f.finding_id: f.score for f in findings.findings}
    drawn: Counter[tuple[str, tuple[float, ...]]] = Counter()
    for annotation in pr.GraphicAnnotationSequence:
        assert annotation.GraphicLayer == "CAD_MARKS"
        (ref,) = annotation.ReferencedImageSequence
        uid = ref.ReferencedSOPInstanceUID
        cols, rows = size[uid]
        for obj in annotation.GraphicObjectSequence:
            kind = (obj.GraphicType, obj.GraphicAnnotationUnits, obj.GraphicFilled)
            assert kind == ("POLYLINE", "PIXEL", "N")
            points = np.array(obj.GraphicData).reshape(-1, 2)
            assert len(points) == 5 and (points[0] == points[-1]).all(), "closed rectangle"
            (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
            assert {tuple(p) for p in points} == {(x0, y0), (x1, y0), (x1, y1), (x0, y1)}
            drawn[(uid, (float(x0), float(y0), float(x1), float(y1)))] += 1
        for text in annotation.TextObjectSequence:
            left, top = text.BoundingBoxTopLeftHandCorner
            right, bottom = text.BoundingBoxBottomRightHandCorner
            assert 0 <= left < right <= cols and 0 <= top < bottom <= rows, "label inside the image"
            finding_id = groups[text.GraphicGroupID]
            assert text.UnformattedTextValue.startswith(f"{finding_id} {scores[finding_id]:.3f}")
        assert len(annotation.TextObjectSequence) == len(annotation.GraphicObjectSequence)
    assert drawn == expected
    assert not below & set(drawn), "a finding below the operating point is drawn"


@pytest.mark.req("SRS-DCM-002")
def test_gsps_voi_is_each_images_window(mass_analysis: Analysis, pr_file: Path) -> None:
    _, views = mass_analysis
    pr = pydicom.dcmread(pr_file)
    assert pr.PresentationLUTShape == "IDENTITY"
    for view in views:
        header = view.image.header
        (item,) = [i for i in pr.SoftcopyVOILUTSequence if applies(i, view.image.sop_instance_uid)]
        assert float(item.WindowCenter) == float(header.WindowCenter)
        assert float(item.WindowWidth) == float(header.WindowWidth)
        assert item.VOILUTFunction == header.VOILUTFunction


@pytest.mark.req("SRS-DCM-002")
def test_gsps_of_monochrome1_images_displays_like_the_monochrome2_original(
    mass_analysis: Analysis, pr_file: Path, tmp_path: Path
) -> None:
    """A presentation state overrides Photometric Interpretation (PS3.4 N.2.1.4): MONOCHROME1
    images keep their look only through an INVERSE Presentation LUT Shape."""
    findings, views = mass_analysis
    paths = [variant(v.image.path, to_monochrome1, tmp_path / "mono1" / v.image.path.name)
             for v in views]
    images = [read_image(path) for path in paths]
    assert {i.photometric_interpretation for i in images} == {"MONOCHROME1"}
    headers = [i.header for i in images]
    pr1 = write(build_presentation_state(findings, headers, uids_of(findings, headers)),
                tmp_path / "pr1.dcm")
    assert pr1.PresentationLUTShape == "INVERSE"

    pr2 = pydicom.dcmread(pr_file)
    for view, path in zip(views, paths):
        a = gray(render_presentation_state(view.image.path, pr2, tmp_path / f"{path.stem}-2.png"))
        b = gray(render_presentation_state(path, pr1, tmp_path / f"{path.stem}-1.png"))
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
        assert np.abs(a - b).mean() < 1.0


@pytest.mark.req("SRS-DCM-002")
def test_gsps_carries_a_voi_lut_sequence_and_renders_it_like_the_window(
    mass_analysis: Analysis, tmp_path: Path
) -> None:
    """An image displayed through a 12-bit VOI LUT Sequence: the GSPS carries it as the 16-bit LUT
    a presentation state allows and shows the image as the equivalent window does; with no marks
    it is still a GSPS."""
    findings, views = mass_analysis
    source = views[0].image.path
    no_marks = replace(findings, findings=[])
    rendered = []
    for name, path in (("window", source), ("lut", variant(source, to_lut, tmp_path / "lut.dcm"))):
        header = read_image(path).header
        pr = write(build_presentation_state(no_marks, [header], uids_of(no_marks, [header])),
                   tmp_path / f"{name}-pr.dcm")
        assert "GraphicAnnotationSequence" not in pr
        rendered.append(gray(render_presentation_state(path, pr, tmp_path / f"{name}.png")))
    (item,) = pr.SoftcopyVOILUTSequence
    assert list(item.VOILUTSequence[0].LUTDescriptor) == [2 ** int(header.BitsStored), 0, 16]
    assert np.abs(rendered[0] - rendered[1]).max() <= 1


@pytest.mark.req("SRS-DCM-002")
def test_gsps_needs_an_analysed_image(mass_analysis: Analysis) -> None:
    findings, views = mass_analysis
    uids = uids_of(findings, [v.image.header for v in views])
    with pytest.raises(ValueError, match="headers"):
        build_presentation_state(findings, [], uids)


@pytest.mark.req("SRS-DCM-005")
@pytest.mark.parametrize("case", ["marks", "no-marks", "monochrome1", "voi-lut"])
def test_dciodvfy_reports_no_errors(mass_analysis: Analysis, case: str, tmp_path: Path) -> None:
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    findings, views = mass_analysis
    headers = [v.image.header for v in views]
    if case == "no-marks":
        findings = replace(findings, findings=[])
    elif case in ("monochrome1", "voi-lut"):
        modify = to_monochrome1 if case == "monochrome1" else to_lut
        headers = [read_image(variant(v.image.path, modify, tmp_path / v.image.path.name)).header
                   for v in views]
    path = tmp_path / "cad-pr.dcm"
    write(build_presentation_state(findings, headers, uids_of(findings, headers)), path)
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    print("\n".join(line for line in lines if line.startswith("Warning")))
    assert not [line for line in lines if line.startswith("Error")], "\n".join(lines)


@pytest.mark.req("SRS-DCM-003")
def test_gsps_uids_are_valid_and_a_rebuild_gives_the_same_object(mass_analysis: Analysis) -> None:
    findings, views = mass_analysis
    uids = uids_of(findings, [v.image.header for v in views])
    first, second = build(findings, views), build(findings, views)
    assert first.SOPInstanceUID == second.SOPInstanceUID == uids["pr_instance"]
    assert first.SeriesInstanceUID == second.SeriesInstanceUID == uids["pr_series"]
    assert is_valid_uid(uids["pr_instance"]) and is_valid_uid(uids["pr_series"])
    for ds in (first, second):
        for keyword in CREATION_TIMES:
            delattr(ds, keyword)
    assert first == second


@pytest.mark.req("SRS-DCM-002")
def test_render_draws_the_marks_on_the_box_outlines(
    mass_analysis: Analysis, pr_file: Path, tmp_path: Path
) -> None:
    _, views = mass_analysis
    pr = pydicom.dcmread(pr_file)
    (layer,) = pr.GraphicLayerSequence
    color = CIELabColor.from_dicom_value(
        [int(v) for v in layer.GraphicLayerRecommendedDisplayCIELabValue]).to_rgb(clip=True)
    annotation = pr.GraphicAnnotationSequence[0]
    uid = annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    view = next(v for v in views if v.image.sop_instance_uid == uid)
    png = render_presentation_state(view.image.path, pr, tmp_path / "marks.png")
    rgb = np.asarray(Image.open(png).convert("RGB"))
    rows = view.image.shape[0]
    scale = min(1.0, MAX_HEIGHT / rows)
    assert rgb.shape[0] == round(rows * scale) <= MAX_HEIGHT
    for obj in annotation.GraphicObjectSequence:
        (x0, y0), (x1, y1) = np.array(obj.GraphicData).reshape(-1, 2)[[0, 2]]
        middle = (y0 + y1) / 2 * scale - 0.5
        for x in (x0, x1):  # left and right edges, half-way down
            assert tuple(rgb[round(middle), round(x * scale - 0.5)]) == color
        assert tuple(rgb[round(middle), round((x0 + x1) / 2 * scale - 0.5)]) != color, "not filled"


@pytest.mark.req("SRS-DCM-008")
def test_a_later_result_is_labelled_as_replacing_the_earlier_marks(mass_analysis: Analysis, pr_file: Path,
                                                                    tmp_path: Path) -> None:
    from cad.report.gsps import content_label

    findings, views = mass_analysis
    headers = [v.image.header for v in views]
    first = pydicom.dcmread(pr_file)
    later = write(build_presentation_state(findings, headers, uids_of(findings, headers), result_number=3),
                  tmp_path / "later.dcm")
    assert first.ContentLabel == content_label(1) == "CAD_MARKS" and later.ContentLabel == "CAD_MARKS_V3"
    assert later.ContentDescription.startswith("Result 3, replaces earlier CAD marks")
    assert len(later.ContentDescription) <= 64 and len(first.ContentDescription) <= 64
    assert later.GraphicAnnotationSequence == first.GraphicAnnotationSequence, "the same marks"
    with pytest.raises(ValueError, match="counts from 1"):
        content_label(0)
