"""Standalone detection performance of `cad detect` output against truth.json.

Marks are the views of each finding. Two scorings are compared on the same marks:
*dual-view* (each mark carries its finding's fused score, the product's output) and
*single-view* (each mark carries its own view's detector score, as if there were no linking).
Linking is scored at the dual-view 1-FPI operating point. The FROC scoring rules are in
:mod:`verification.froc`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from verification.froc import FPI_POINTS, FrocResult, ScoredMark, TruthLesion, localises, score_marks


@dataclass(frozen=True)
class Criteria:
    """Which lesions count, and how a mark localises one."""

    lesion_types: tuple[str, ...] = ("mass",)
    min_diameter_mm: float = 8.0
    iou_threshold: float | None = None

    def includes(self, lesion: dict[str, Any]) -> bool:
        return lesion["type"] in self.lesion_types and float(lesion["diameter_mm"]) >= self.min_diameter_mm

    def describe(self) -> dict[str, Any]:
        return {
            "lesion_types": list(self.lesion_types),
            "min_diameter_mm": self.min_diameter_mm,
            "localisation": "mark box centre inside the truth box" if self.iou_threshold is None
            else f"IoU >= {self.iou_threshold}",
            "excluded_lesions": "marks localising only an excluded lesion are ignored",
        }


class EvaluationInputError(ValueError):
    """A truth or findings file that is not what its schema says."""


def _schema(name: str) -> dict[str, Any]:
    import cad

    return json.loads((Path(cad.__file__).parent / "schemas" / name).read_text())


def _validated(path: Path, schema: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        jsonschema.validate(data, schema)
    except ValueError as exc:
        raise EvaluationInputError(f"{path}: not JSON ({exc})") from None
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise EvaluationInputError(f"{path}: invalid at {where}: {exc.message[:200]}") from None
    return data


def load_truth(path: Path) -> dict[str, Any]:
    """truth.json, validated against cad/schemas/truth.schema.json."""
    return _validated(path, _schema("truth.schema.json"))


def load_findings(folder: Path) -> dict[str, dict[str, Any]]:
    """findings.json of every study below ``folder`` (schema-validated), by StudyInstanceUID."""
    schema = _schema("findings.schema.json")
    out = {}
    for path in sorted(folder.rglob("findings.json")):
        data = _validated(path, schema)
        out[data["study_instance_uid"]] = data
    return out


def _lesions(truth: dict[str, Any], criteria: Criteria) -> list[TruthLesion]:
    return [
        TruthLesion(lesion["lesion_id"], view["sop_instance_uid"], view["box"], criteria.includes(lesion))
        for exam in truth["exams"] for lesion in exam["lesions"] for view in lesion["views"]
    ]


def _summary(result: FrocResult) -> dict[str, Any]:
    return {
        "lesion_views": result.n_lesions,
        "images": result.n_images,
        "sensitivity_at_fpi": {f"{f:g}": round(result.sensitivity_at(f), 4) for f in FPI_POINTS},
        "threshold_at_fpi": {f"{f:g}": round(result.threshold_at(f), 6) for f in FPI_POINTS},
    }


def _linking(truth: dict[str, Any], findings: dict[str, dict[str, Any]], threshold: float,
             criteria: Criteria) -> dict[str, Any]:
    iou = criteria.iou_threshold
    both_detected = linked_as_one = 0
    linked_total = wrong = false_pairs = correct = 0
    for exam in truth["exams"]:
        data = findings.get(exam["study_instance_uid"])
        if data is None:
            continue
        shown = [f for f in data["findings"] if f["score"] >= threshold]
        lesion_boxes = {
            (lesion["lesion_id"], v["sop_instance_uid"]): v["box"]
            for lesion in exam["lesions"] for v in lesion["views"]
        }

        def hit(view: dict[str, Any]) -> set[str]:
            return {lid for (lid, uid), box in lesion_boxes.items()
                    if uid == view["sop_instance_uid"] and localises(view["box"], box, iou)}

        for lesion in exam["lesions"]:
            if not criteria.includes(lesion) or len(lesion["views"]) != 2:
                continue
            lid = lesion["lesion_id"]
            views_hit = {v["view"] for f in shown for v in f["views"] if lid in hit(v)}
            if views_hit >= {"CC", "MLO"}:
                both_detected += 1
                if any(len(f["views"]) == 2 and all(lid in hit(v) for v in f["views"]) for f in shown):
                    linked_as_one += 1
        for f in shown:
            if len(f["views"]) != 2:
                continue
            linked_total += 1
            a, b = (hit(v) for v in f["views"])
            if not a and not b:
                false_pairs += 1
            elif not (a & b):
                wrong += 1
            else:
                correct += 1
    return {
        "operating_threshold": round(threshold, 6),
        "lesions_detected_in_both_views": both_detected,
        "of_which_linked_as_one_finding": linked_as_one,
        "link_recall": round(linked_as_one / both_detected, 4) if both_detected else None,
        "linked_findings": linked_total,
        "linked_findings_joining_different_lesions_or_a_false_mark": wrong,
        "link_error_rate": round(wrong / linked_total, 4) if linked_total else None,
        "linked_findings_joining_two_false_marks": false_pairs,
        "linked_findings_joining_one_lesion": correct,
        "link_precision": round(correct / linked_total, 4) if linked_total else None,
    }


def _sensitivity_at_threshold(result: FrocResult, threshold: float) -> float:
    scores = np.nan_to_num(result.lesion_scores, nan=-np.inf)
    return float((scores >= threshold).sum() / max(result.n_lesions, 1))


def _fpi_at_threshold(result: FrocResult, threshold: float) -> float:
    return float((result.fp_scores >= threshold).sum() / max(result.n_images, 1))


def evaluate(truth: dict[str, Any], findings: dict[str, dict[str, Any]],
             criteria: Criteria | None = None) -> dict[str, Any]:
    """FROC (dual- and single-view scoring), fusion gain and linking metrics."""
    criteria = criteria or Criteria()
    lesions = _lesions(truth, criteria)
    image_ids = [im["sop_instance_uid"] for exam in truth["exams"] for im in exam["images"]]
    dual: list[ScoredMark] = []
    single: list[ScoredMark] = []
    not_analysed = 0
    missing_studies = 0
    for exam in truth["exams"]:
        data = findings.get(exam["study_instance_uid"])
        if data is None:
            missing_studies += 1
            continue
        not_analysed += sum(i["status"] != "analyzed" for i in data["images"])
        for f in data["findings"]:
            for v in f["views"]:
                dual.append(ScoredMark(v["sop_instance_uid"], v["box"], float(f["score"])))
                single.append(ScoredMark(v["sop_instance_uid"], v["box"], float(v["score"])))
    dual_result = score_marks(dual, lesions, image_ids, criteria.iou_threshold)
    single_result = score_marks(single, lesions, image_ids, criteria.iou_threshold)
    gain = {f"{f:g}": round(dual_result.sensitivity_at(f) - single_result.sensitivity_at(f), 4)
            for f in FPI_POINTS}
    locked = sorted({float(d["operating_point"]["threshold"]) for d in findings.values()})
    if len(locked) > 1:
        raise EvaluationInputError(f"findings come from models with different operating points: {locked}")
    locked_threshold = locked[0] if locked else dual_result.threshold_at(1.0)
    return {
        "criteria": criteria.describe(),
        "data": {
            "exams": len(truth["exams"]), "images": len(image_ids),
            "studies_without_findings": missing_studies, "images_not_analysed": not_analysed,
            "included_lesions": len({l.lesion_id for l in lesions if l.included}),
            "included_lesion_views": sum(l.included for l in lesions),
            "seed": truth.get("seed"),
        },
        "dual_view": _summary(dual_result),
        "single_view": _summary(single_result),
        "fusion_gain": gain,
        "operating_point": {
            "locked_threshold": locked_threshold,
            "sensitivity": round(_sensitivity_at_threshold(dual_result, locked_threshold), 4),
            "fpi": round(_fpi_at_threshold(dual_result, locked_threshold), 4),
        },
        # linking at the locked operating point (set at 1 FPI on validation data) and at the
        # threshold giving 1 FPI on these data
        "linking": _linking(truth, findings, locked_threshold, criteria),
        "linking_at_1fpi_here": _linking(truth, findings, dual_result.threshold_at(1.0), criteria),
    }
