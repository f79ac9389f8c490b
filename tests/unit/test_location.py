"""Where each finding is (SRS-LNK-005), the truth's lesion positions (SRS-PHA-006) and the
evaluation's location accuracy (SRS-PERF-008)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cad.analysis.location import ViewPosition, clock_hour, locate, view_position
from cad.io import load
from cad.io.image import Laterality, View
from cad.preprocess.geometry import compute_geometry
from cad.result.findings_json import LOCATION_VERSION, result_from_dict, result_to_dict
from cad.result.model import (
    ANALYZED,
    Algorithm,
    Finding,
    FindingLocation,
    FindingType,
    FindingView,
    ImageStatus,
    ResultError,
    StudyResult,
)
from verification.standalone import Criteria, _location_accuracy
from verification.truth import parse_truth

SCHEMA = Path(__file__).resolve().parents[2] / "cad" / "schemas" / "truth.schema.json"


@pytest.mark.req("SRS-LNK-005")
@pytest.mark.parametrize(("laterality", "lateral", "superior", "hour"), [
    (Laterality.RIGHT, 0.0, 30.0, 12), (Laterality.RIGHT, 0.0, -30.0, 6),
    (Laterality.RIGHT, 30.0, 0.0, 9), (Laterality.RIGHT, -30.0, 0.0, 3),
    (Laterality.LEFT, 30.0, 0.0, 3), (Laterality.LEFT, -30.0, 0.0, 9),
    (Laterality.LEFT, 30.0, 30.0, 2), (Laterality.RIGHT, 30.0, 30.0, 10),  # upper outer: 1:30 / 10:30
])
def test_clock_hours_seen_facing_the_patient(laterality: Laterality, lateral: float, superior: float,
                                             hour: int) -> None:
    assert clock_hour(laterality, lateral, superior) == hour


@pytest.mark.req("SRS-LNK-005")
def test_a_linked_finding_has_a_quadrant_and_a_clock_and_a_single_view_half_a_quadrant() -> None:
    cc = ViewPosition(View.CC, 60.0, 0.5, 25.0)  # 25 mm lateral
    # MLO offset y sin45 + z cos45 for y = 25 (lateral), z = 25 (superior)
    mlo = ViewPosition(View.MLO, 64.0, 0.45, 25.0 * 2 ** 0.5)
    both = locate(Laterality.LEFT, [cc, mlo])
    assert (both.basis, both.region, both.clock, both.depth) == ("CC+MLO", "upper outer", 2, "middle")
    assert both.nipple_distance_mm == 62.0
    right = locate(Laterality.RIGHT, [cc, mlo])
    assert (right.region, right.clock) == ("upper outer", 10)
    assert locate(Laterality.LEFT, [cc]) == FindingLocation("CC", 60.0, "middle", None, "outer")
    low = ViewPosition(View.MLO, 70.0, 0.9, -30.0)
    assert locate(Laterality.LEFT, [low]) == FindingLocation("MLO", 70.0, "posterior", None, "lower")
    near = locate(Laterality.RIGHT, [ViewPosition(View.CC, 15.0, 0.1, 12.0), ViewPosition(View.MLO, 17.0, 0.1, 10.0)])
    assert (near.region, near.clock, near.depth) == ("retroareolar", None, "anterior")
    axis = locate(Laterality.RIGHT, [ViewPosition(View.CC, 50.0, 0.5, 2.0), ViewPosition(View.MLO, 50.0, 0.5, 3.0)])
    assert (axis.region, axis.clock) == ("central", None)


def _finding(views: tuple[FindingView, ...], location: FindingLocation | None) -> Finding:
    return Finding("F001", Laterality.LEFT, FindingType.MASS, 0.8, views, None, None, location)


CC = FindingView("1.2.3", View.CC, (10, 10, 30, 30), 0.8)
MLO = FindingView("1.2.4", View.MLO, (10, 10, 30, 30), 0.7)


@pytest.mark.req("SRS-LNK-005")
def test_findings_json_carries_the_location_and_refuses_an_impossible_one() -> None:
    images = (ImageStatus("1.2.3", Laterality.LEFT, View.CC, ANALYZED), ImageStatus("1.2.4", Laterality.LEFT, View.MLO,
                                                                                 ANALYZED))
    where = FindingLocation("CC+MLO", 62.04, "middle", 2, "upper outer")
    result = StudyResult("1.2", Algorithm("cad", "0", "a" * 64), 0.5, images, (_finding((CC, MLO), where),))
    data = result_to_dict(result)
    assert data["schema_version"] == LOCATION_VERSION
    assert data["findings"][0]["location"] == {"basis": "CC+MLO", "nipple_distance_mm": 62.0, "depth": "middle",
                                               "clock": 2, "region": "upper outer"}
    assert result_from_dict(json.loads(json.dumps(data))).findings[0].location == FindingLocation(
        "CC+MLO", 62.0, "middle", 2, "upper outer")
    with pytest.raises(ResultError, match="clock"):
        _finding((CC,), FindingLocation("CC", 60.0, "middle", 2, "outer"))
    with pytest.raises(ResultError, match="rests on"):
        _finding((CC,), FindingLocation("MLO", 60.0, "middle", None, "upper"))
    with pytest.raises(ResultError, match="region"):
        FindingLocation("CC", 60.0, "middle", None, "nowhere")
    # the short form on the overlays' mark labels
    assert where.label() == "2 o'clock UOQ, 62 mm from nipple"
    assert FindingLocation("CC", 37.2, "anterior", None, "outer").label() == "outer, 37 mm from nipple"
    assert FindingLocation("CC+MLO", 15.0, "anterior", None, "retroareolar").label() == "retroareolar, 15 mm from nipple"


@pytest.mark.req("SRS-PHA-006", "SRS-LNK-005")
def test_truth_positions_agree_with_the_locations_computed_from_the_truth_boxes(mass_phantom_dir: Path,
                                                                                mass_truth: dict[str, Any]) -> None:
    """The phantom's 3D positions (SRS-PHA-006) and the device's geometry (SRS-LNK-005) tell the
    same story for the fixture's masses, located from their truth boxes on both views."""
    jsonschema.validate(mass_truth, json.loads(SCHEMA.read_text()))
    truth = parse_truth(mass_truth, "truth.json")
    images = {image.sop_instance_uid: image for image in load([mass_phantom_dir]).images}
    checked = 0
    for lesion in truth.exams[0].lesions:
        assert lesion.position is not None
        where = lesion.position
        lateral_sign = 1 if where.lateral_mm >= 0 else -1
        facing = lateral_sign if lesion.laterality is Laterality.LEFT else -lateral_sign  # +: 12-6 on the viewer's right
        if abs(where.lateral_mm) > 5:
            assert (1 <= where.clock <= 6) == (facing > 0) or where.clock in (6, 12), where
        if len(lesion.views) != 2:
            continue
        positions = []
        for v in lesion.views:
            image = images[v.sop_instance_uid]
            geometry = compute_geometry(image, 0.4)
            positions.append(view_position(geometry, v.view, v.box))
        located = locate(lesion.laterality, positions)
        assert abs(located.nipple_distance_mm - where.nipple_distance_mm) <= 10.0, (located, where)
        assert located.clock is not None
        error = abs(located.clock - where.clock)
        assert min(error, 12 - error) <= 1, (located, where)
        checked += 1
    assert checked >= 2


@pytest.mark.req("SRS-PHA-006")
def test_truth_without_positions_loads_with_none() -> None:
    data = {"exams": [{"study_instance_uid": "1.2", "images": [], "lesions": [
        {"lesion_id": "A", "type": "mass", "diameter_mm": 10.0, "laterality": "L",
         "views": [{"sop_instance_uid": "1.2.3", "view": "CC", "box": [1, 1, 5, 5]}]}]}]}
    assert parse_truth(data, "truth.json").exams[0].lesions[0].position is None


def _truth_and_findings(clock: int, nipple: float) -> tuple[Any, dict[str, StudyResult]]:
    data = {"exams": [{"study_instance_uid": "1.2", "images": [], "lesions": [
        {"lesion_id": "A", "type": "mass", "diameter_mm": 12.0, "laterality": "L",
         "position": {"chest_wall_mm": 40.0, "lateral_mm": 20.0, "superior_mm": 20.0, "nipple_distance_mm": 60.0,
                      "depth_fraction": 0.5, "clock": 2},
         "views": [{"sop_instance_uid": "1.2.3", "view": "CC", "box": [10, 10, 30, 30]},
                   {"sop_instance_uid": "1.2.4", "view": "MLO", "box": [10, 10, 30, 30]}]}]}]}
    where = FindingLocation("CC+MLO", nipple, "middle", clock, "upper outer")
    images = (ImageStatus("1.2.3", Laterality.LEFT, View.CC, ANALYZED), ImageStatus("1.2.4", Laterality.LEFT, View.MLO,
                                                                                 ANALYZED))
    result = StudyResult("1.2", Algorithm("cad", "0", "a" * 64), 0.5, images, (_finding((CC, MLO), where),))
    return parse_truth(data, "truth.json"), {"1.2": result}


@pytest.mark.req("SRS-PERF-008")
@pytest.mark.parametrize(("clock", "nipple", "within_hour", "within_10mm"), [
    (2, 60.0, 1, 1), (3, 71.0, 1, 0), (5, 55.0, 0, 1), (11, 48.0, 0, 0)])
def test_location_accuracy_counts_clock_and_nipple_distance(clock: int, nipple: float, within_hour: int,
                                                            within_10mm: int) -> None:
    truth, findings = _truth_and_findings(clock, nipple)
    accuracy = _location_accuracy(truth, findings, 0.5, Criteria())
    assert accuracy is not None
    linked = accuracy["linked"]
    assert linked["lesions"] == 1 and linked["clock_within_1h"]["count"] == within_hour
    assert linked["nipple_within_10mm"]["count"] == within_10mm
    assert linked["median_nipple_error_mm"] == round(abs(nipple - 60.0), 2)
    assert linked["quadrant_agrees"]["count"] == 1 and linked["depth_third_agrees"]["count"] == 1
    none = {"1.2": StudyResult("1.2", findings["1.2"].algorithm, 0.5, findings["1.2"].images,
                               (_finding((CC, MLO), None),))}
    assert _location_accuracy(truth, none, 0.5, Criteria()) is None
