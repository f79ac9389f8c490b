"""The study-result contract and findings.json (SRS-OUT-004, SRS-OUT-001)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cad.io.image import Laterality, View
from cad.result.findings_json import (
    SCHEMA_VERSION,
    read_result,
    result_from_dict,
    result_to_dict,
    result_to_json,
    write_result,
)
from cad.result.model import (
    ANALYZED,
    NOT_ANALYZED,
    Algorithm,
    BreastState,
    Finding,
    FindingType,
    FindingView,
    ImageState,
    ImageStatus,
    ResultError,
    StudyResult,
)

ALGORITHM = Algorithm("test algorithm", "9.9", "ab" * 32, "test-model", "cd" * 32)
UIDS = {(lat, view): f"1.2.3.{i}" for i, (lat, view) in enumerate(
    (lat, view) for lat in (Laterality.RIGHT, Laterality.LEFT) for view in (View.CC, View.MLO))}


def images(refused: bool = False) -> tuple[ImageStatus, ...]:
    out = [ImageStatus(uid, lat, view, ANALYZED, None, f"{lat.value}{view.value}.dcm") for (lat, view), uid in UIDS.items()]
    if refused:
        out.append(ImageStatus(None, None, None, NOT_ANALYZED, "not a DICOM file", "junk.dcm", "not_dicom"))
    return tuple(out)


def view(lat: Laterality, kind: View, score: float, box: tuple[float, ...] = (10, 20, 30, 40)) -> FindingView:
    return FindingView(UIDS[(lat, kind)], kind, box, score)  # type: ignore[arg-type]


def result(findings: tuple[Finding, ...], threshold: float = 0.5, refused: bool = False) -> StudyResult:
    return StudyResult("1.2.3", ALGORITHM, threshold, images(refused), findings)


def linked(score: float = 0.8, finding_id: str = "F001") -> Finding:
    return Finding(finding_id, Laterality.RIGHT, FindingType.MASS, score,
                   (view(Laterality.RIGHT, View.CC, 0.7), view(Laterality.RIGHT, View.MLO, 0.6)), 1.25)


@pytest.mark.req("SRS-OUT-004")
@pytest.mark.parametrize(("build", "message"), [
    (lambda: FindingView("1.2.3.0", View.CC, (30, 20, 10, 40), 0.5), "is not [x0, y0, x1, y1]"),
    (lambda: FindingView("1.2.3.0", View.CC, (10, 20, float("nan"), 40), 0.5), "is not [x0, y0, x1, y1]"),
    (lambda: FindingView("1.2.3.0", View.CC, (10, 20, 30, 40), 1.5), "is not in [0, 1]"),
    (lambda: FindingView("1.2.3.0", View.ML, (10, 20, 30, 40), 0.5), "is not a CC or MLO view"),
    (lambda: FindingView("1.2.3.0", "AP", (10, 20, 30, 40), 0.5), "'AP' is not a valid View"),
    (lambda: Finding("F001", Laterality.RIGHT, FindingType.MASS, 0.5,
                     (view(Laterality.RIGHT, View.CC, 0.5), view(Laterality.RIGHT, View.CC, 0.4))), "one CC and one MLO"),
    (lambda: Finding("F001", Laterality.RIGHT, FindingType.MASS, 0.5, ()), "0 views"),
    (lambda: Finding("F001", "X", FindingType.MASS, 0.5, (view(Laterality.RIGHT, View.CC, 0.5),)), "not a valid Laterality"),
    (lambda: Finding("F001", Laterality.RIGHT, "calcification", 0.5, (view(Laterality.RIGHT, View.CC, 0.5),)),
     "not a valid FindingType"),
    (lambda: Finding("F001", Laterality.RIGHT, FindingType.MASS, 0.5, (view(Laterality.RIGHT, View.CC, 0.5),), 2.0),
     "only a linked finding has a link cost"),
    (lambda: ImageStatus("1.2.3.9", Laterality.LEFT, View.CC, NOT_ANALYZED, None), "needs its reason"),
    (lambda: ImageStatus("1.2.3.9", Laterality.LEFT, View.CC, ANALYZED, "why"), "has no reason"),
    (lambda: ImageStatus("1.2.3.9", None, View.CC, ANALYZED), "needs its instance UID, laterality and view"),
    (lambda: ImageStatus("1.2.3.9", Laterality.LEFT, View.CC, "done"), "not a valid ImageState"),
    (lambda: Algorithm("a", "1", "not-a-hash"), "not a SHA-256"),
    (lambda: result((linked(finding_id="F001"), linked(finding_id="F001"))), "present and unique"),
    (lambda: result((linked(), ), threshold=1.2), "operating threshold"),
    (lambda: result((Finding("F001", Laterality.LEFT, FindingType.MASS, 0.5,
                             (FindingView(UIDS[(Laterality.RIGHT, View.CC)], View.CC, (1, 2, 3, 4), 0.5),)),)),
     "laterality or view differs from its image"),
    (lambda: StudyResult("1.2.3", ALGORITHM, 0.5,
                         (ImageStatus(UIDS[(Laterality.RIGHT, View.CC)], Laterality.RIGHT, View.CC, NOT_ANALYZED, "no breast"),),
                         (Finding("F001", Laterality.RIGHT, FindingType.MASS, 0.5, (view(Laterality.RIGHT, View.CC, 0.5),)),)),
     "is not an analysed image of the study"),
])
def test_the_contract_refuses_what_is_outside_it(build, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        build()


@pytest.mark.req("SRS-OUT-004")
def test_marks_are_the_findings_at_or_above_the_threshold() -> None:
    at = linked(0.5, "F001")
    below = Finding("F002", Laterality.LEFT, FindingType.MASS, 0.4999999, (view(Laterality.LEFT, View.MLO, 0.4999999),))
    study = result((at, below), threshold=0.5)
    assert study.marks == (at,)
    assert study.is_mark(0.5) and not study.is_mark(0.4999999)
    assert replace(study, operating_threshold=0.4).marks == (at, below)


@pytest.mark.req("SRS-OUT-004", "SRS-OUT-001")
def test_findings_json_round_trips_byte_for_byte_and_carries_the_ingest_code(tmp_path: Path) -> None:
    study = result((linked(0.9, "F001"),
                    Finding("F002", Laterality.LEFT, FindingType.MASS, 0.3, (view(Laterality.LEFT, View.CC, 0.3),))),
                   refused=True)
    path = write_result(study, tmp_path / "findings.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION == "1.2"
    refused = [i for i in data["images"] if i["status"] == "not_analyzed"]
    assert refused == [{"sop_instance_uid": None, "laterality": None, "view": None, "status": "not_analyzed",
                        "reason": "not a DICOM file", "file": "junk.dcm", "error_code": "not_dicom"}]
    assert all("error_code" not in i for i in data["images"] if i["status"] == "analyzed")
    again = read_result(path)
    assert again == study
    assert result_to_json(again) == path.read_text()
    assert again.images[0].status is ImageState.ANALYZED and again.findings[0].laterality is Laterality.RIGHT


@pytest.mark.req("SRS-OUT-004")
def test_schema_1_0_files_are_read_and_unknown_versions_refused(tmp_path: Path) -> None:
    data = result_to_dict(result((linked(),)))
    data["schema_version"] = "1.0"
    assert result_from_dict(data).findings[0].finding_id == "F001"
    data["schema_version"] = "2.0"
    with pytest.raises(ResultError, match="schema_version '2.0'"):
        result_from_dict(data)
    broken = tmp_path / "findings.json"
    broken.write_text('{"schema_version": "1.1"}')
    with pytest.raises(ResultError, match=f"{broken}: not a findings.json object"):
        read_result(broken)


@pytest.mark.req("SRS-OUT-005")
def test_each_breast_is_stated_against_the_four_view_protocol(tmp_path: Path) -> None:
    complete = result((linked(),), refused=True)
    assert complete.exam_complete
    assert [(b.laterality, b.status) for b in complete.breasts] == [(Laterality.RIGHT, BreastState.ANALYSED),
                                                                     (Laterality.LEFT, BreastState.ANALYSED)]
    right_only = [i for i in images() if i.laterality is Laterality.RIGHT]
    left_cc_refused = ImageStatus(UIDS[(Laterality.LEFT, View.CC)], Laterality.LEFT, View.CC, NOT_ANALYZED,
                                  "breast region could not be found", "LCC.dcm")
    cases = {
        "absent": (right_only, BreastState.ABSENT, (), (View.CC, View.MLO)),
        "not analysed": ([*right_only, left_cc_refused], BreastState.NOT_ANALYSED, (), (View.CC, View.MLO)),
        "partial": ([*right_only, images()[3]], BreastState.PARTIAL, (View.MLO,), (View.CC,)),
    }
    for name, (found, state, analysed, missing) in cases.items():
        study = StudyResult("1.2.3", ALGORITHM, 0.5, tuple(found), (linked(),))
        right, left = study.breasts
        assert right.status is BreastState.ANALYSED and not study.exam_complete, name
        assert (left.status, left.views_analysed, left.views_missing) == (state, analysed, missing), name
        data = json.loads(write_result(study, tmp_path / f"{name}.json").read_text())
        assert data["exam_complete"] is False and data["breasts"][1]["status"] == state.value, name
        assert data["breasts"][1]["views_missing"] == [v.value for v in missing], name
        assert read_result(tmp_path / f"{name}.json") == study
    forged = json.loads((tmp_path / "absent.json").read_text())
    forged["exam_complete"] = True
    with pytest.raises(ResultError, match="disagree"):
        result_from_dict(forged)
