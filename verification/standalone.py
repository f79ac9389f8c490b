"""Standalone detection performance of `cad detect` output against truth.json.

Marks are the views of each finding. Two scorings are compared on the same marks:
*dual-view* (each mark carries its finding's fused score, the product's output) and
*single-view* (each mark carries its own view's detector score, as if there were no linking).
Linking is scored at the locked operating point and at the dual-view 1-FPI threshold. The
FROC scoring rules and the AFROC/wAFROC definitions are in :mod:`verification.froc`.

Units (stated in the report): the FROC is per lesion per view (each lesion counted once in each
view that shows it, FPI over all images); the case is the exam, and for AFROC/wAFROC a lesion is
the lesion in the breast, rated by its best localisation in any view, the false-positive rating
of a normal exam being its highest-rated false mark in any view. Case and breast ROC score a
unit by its highest finding score. Intervals come from the exam-level bootstrap in
:mod:`verification.bootstrap`. :func:`analyse` returns the metrics and the curves the report
(:mod:`verification.standalone_report`) draws.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from cad.io.image import View
from cad.result.findings_json import FINDINGS_FILE, result_from_dict, result_to_dict
from cad.result.model import DEPTHS, FindingView, ResultError, StudyResult
from verification import bootstrap as bs
from verification.froc import (
    FPI_POINTS,
    FrocResult,
    ScoredMark,
    TruthLesion,
    afroc_curve,
    afroc_fom,
    localises,
    score_marks,
)
from verification.roc import auc, roc_curve
from verification.truth import Box, Lesion, LesionView, Truth, TruthError, TruthExam, parse_truth

#: an analysed lesion view: (exam index in the truth, the lesion, the view)
IncludedView = tuple[int, Lesion, LesionView]
#: lesion size bands (mm): [0, 10), [10, 20], (20, inf)
SIZE_BANDS = ("<10 mm", "10-20 mm", ">20 mm")
#: FPI values at which the bootstrap band of the FROC curve is drawn
FROC_BAND_FPI = np.geomspace(1 / 32, 8, 65)


def size_band(diameter_mm: float) -> str:
    """The size band of a lesion: <10, 10-20 (both inclusive) or >20 mm."""
    return SIZE_BANDS[0] if diameter_mm < 10 else SIZE_BANDS[1] if diameter_mm <= 20 else SIZE_BANDS[2]


#: detectability strata of a lesion view, from truth.json's optional ``detectability.visible``
VISIBILITY = ("visible", "not visible", "not recorded")


def visibility(view: LesionView) -> str:
    """'visible', 'not visible' or 'not recorded' (truth without a detectability record)."""
    record = view.detectability
    if record is None:
        return VISIBILITY[2]
    return VISIBILITY[0] if record.visible else VISIBILITY[1]


@dataclass(frozen=True)
class Criteria:
    """Which lesions count, and how a mark localises one."""

    lesion_types: tuple[str, ...] = ("mass",)
    min_diameter_mm: float = 8.0
    iou_threshold: float | None = None

    def includes(self, lesion: Lesion) -> bool:
        return self.exclusion_reason(lesion) is None

    def exclusion_reason(self, lesion: Lesion) -> str | None:
        """Why a truth lesion is outside the analysis (type first, then size), None if included."""
        if lesion.type not in self.lesion_types:
            return f"type {lesion.type} not analysed"
        if lesion.diameter_mm < self.min_diameter_mm:
            return f"{lesion.type} under {self.min_diameter_mm:g} mm"
        return None

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


def load_truth(path: Path) -> Truth:
    """truth.json, validated against cad/schemas/truth.schema.json and parsed into :class:`Truth`
    (the one reading of truth the evaluation does)."""
    return as_truth(_validated(path, _schema("truth.schema.json")), path)


def as_truth(truth: Truth | Mapping[str, Any], source: str | Path = "truth data") -> Truth:
    """``truth`` as :class:`Truth`: parsed when given as truth.json content (a mapping)."""
    if isinstance(truth, Truth):
        return truth
    try:
        return parse_truth(truth, source)
    except TruthError as exc:
        raise EvaluationInputError(str(exc)) from None


def load_findings(folder: Path) -> dict[str, StudyResult]:
    """findings.json of every study below ``folder`` (schema-validated, then read into the typed
    result contract), by StudyInstanceUID."""
    schema = _schema("findings.schema.json")
    out = {}
    for path in sorted(folder.rglob(FINDINGS_FILE)):
        try:
            result = result_from_dict(_validated(path, schema))
        except ResultError as exc:
            raise EvaluationInputError(f"{path}: {exc}") from None
        out[result.study_instance_uid] = result
    return out


def _lesions(truth: Truth, criteria: Criteria) -> list[TruthLesion]:
    return [
        TruthLesion(lesion.lesion_id, view.sop_instance_uid, view.box, criteria.includes(lesion))
        for exam in truth.exams for lesion in exam.lesions for view in lesion.views
    ]


def _finite(value: float, digits: int = 4) -> float | None:
    """Rounded, or None for inf/nan (metrics.json is strict JSON)."""
    return round(float(value), digits) if np.isfinite(value) else None


def _summary(result: FrocResult) -> dict[str, Any]:
    return {
        "lesion_views": result.n_lesions,
        "images": result.n_images,
        "sensitivity_at_fpi": {f"{f:g}": round(result.sensitivity_at(f), 4) for f in FPI_POINTS},
        # None where no threshold keeps the false marks this low (strict JSON has no Infinity)
        "threshold_at_fpi": {f"{f:g}": _finite(result.threshold_at(f), 6) for f in FPI_POINTS},
    }


def _linking(truth: Truth, findings: Mapping[str, StudyResult], threshold: float,
             criteria: Criteria) -> dict[str, Any]:
    return _linking_counts(truth, findings, threshold, criteria)[0]


#: the location targets of issue 30: clock within one hour, nipple distance within 10 mm
CLOCK_TOLERANCE_HOURS = 1
NIPPLE_TOLERANCE_MM = 10.0


def _location_accuracy(truth: Truth, findings: Mapping[str, StudyResult], threshold: float,
                       criteria: Criteria) -> dict[str, Any] | None:
    """How well the findings' locations (findings.json 1.4) match the truth's lesion positions
    (truth 1.2), at ``threshold``: for each included lesion with a position, the highest-scoring
    shown finding that localises it (a linked finding joining its two views when there is one:
    clock, quadrant, depth and nipple distance; else a single-view one: its side and nipple
    distance). None when the truth has no positions or the findings no locations."""
    iou = criteria.iou_threshold
    linked_rows: list[dict[str, Any]] = []
    single_rows: list[dict[str, Any]] = []
    for exam in truth.exams:
        data = findings.get(exam.study_instance_uid)
        if data is None:
            continue
        shown = [f for f in data.findings if f.score >= threshold and f.location is not None]
        for lesion in exam.lesions:
            where = lesion.position
            if where is None or not criteria.includes(lesion):
                continue
            boxes = {v.sop_instance_uid: v.box for v in lesion.views}

            def hits(view: FindingView, boxes: dict[str, Box] = boxes) -> bool:
                box = boxes.get(view.sop_instance_uid)
                return box is not None and localises(view.box, box, iou)

            linked = [f for f in shown if f.linked and all(hits(v) for v in f.views)]
            single = [f for f in shown if not f.linked and any(hits(v) for v in f.views)]
            truth_depth = DEPTHS[min(2, max(0, int(where.depth_fraction * 3)))]
            if linked:
                location = max(linked, key=lambda f: f.score).location
                assert location is not None
                clock_error = (None if location.clock is None else
                               min(abs(location.clock - where.clock), 12 - abs(location.clock - where.clock)))
                linked_rows.append({
                    "clock_error_h": clock_error, "nipple_error_mm": abs(location.nipple_distance_mm
                                                                         - where.nipple_distance_mm),
                    "quadrant_agrees": location.region == where.quadrant,
                    "depth_agrees": location.depth == truth_depth})
            elif single:
                location = max(single, key=lambda f: f.score).location
                assert location is not None
                side = {"outer": where.lateral_mm >= 0, "inner": where.lateral_mm < 0,
                        "upper": where.superior_mm >= 0, "lower": where.superior_mm < 0}.get(location.region or "")
                single_rows.append({"nipple_error_mm": abs(location.nipple_distance_mm - where.nipple_distance_mm),
                                    "side_agrees": side, "depth_agrees": location.depth == truth_depth})
    if not linked_rows and not single_rows:
        return None

    def share(rows: list[dict[str, Any]], test: Any) -> dict[str, Any]:
        hits = sum(1 for r in rows if test(r))
        return {"count": hits, "of": len(rows), "fraction": round(hits / len(rows), 4) if rows else None}

    def median(values: list[float]) -> float | None:
        return round(float(np.median(values)), 2) if values else None

    clocked = [r for r in linked_rows if r["clock_error_h"] is not None]
    sided = [r for r in single_rows if r["side_agrees"] is not None]
    return {
        "threshold": _finite(threshold, 6),
        "definition": ("each included lesion with a truth position, located by the highest-scoring finding at the "
                       "threshold that localises it: linked (joining its two views) or else single-view; clock "
                       "error in hours on the clock face, nipple distance error in mm"),
        "linked": {
            "lesions": len(linked_rows),
            "with_clock": len(clocked),
            "clock_within_1h": share(clocked, lambda r: r["clock_error_h"] <= CLOCK_TOLERANCE_HOURS),
            "median_clock_error_h": median([r["clock_error_h"] for r in clocked]),
            "nipple_within_10mm": share(linked_rows, lambda r: r["nipple_error_mm"] <= NIPPLE_TOLERANCE_MM),
            "median_nipple_error_mm": median([r["nipple_error_mm"] for r in linked_rows]),
            "quadrant_agrees": share(clocked, lambda r: r["quadrant_agrees"]),
            "depth_third_agrees": share(linked_rows, lambda r: r["depth_agrees"]),
        },
        "single_view": {
            "lesions": len(single_rows),
            "side_agrees": share(sided, lambda r: r["side_agrees"]),
            "nipple_within_10mm": share(single_rows, lambda r: r["nipple_error_mm"] <= NIPPLE_TOLERANCE_MM),
            "median_nipple_error_mm": median([r["nipple_error_mm"] for r in single_rows]),
            "depth_third_agrees": share(single_rows, lambda r: r["depth_agrees"]),
        },
    }


def _linking_counts(truth: Truth, findings: Mapping[str, StudyResult], threshold: float,
                    criteria: Criteria) -> tuple[dict[str, Any], np.ndarray]:
    """The linking summary, and per exam (lesions detected in both views, of which linked as one
    finding, linked findings, of which joining different lesions or a false mark) for the
    bootstrap of link recall and link error rate: shape (exams, 4)."""
    iou = criteria.iou_threshold
    both_detected = linked_as_one = 0
    linked_total = wrong = false_pairs = correct = 0
    per_exam = np.zeros((len(truth.exams), 4))
    for e, exam in enumerate(truth.exams):
        data = findings.get(exam.study_instance_uid)
        if data is None:
            continue
        # a threshold of the FROC sweep (the locked one, or the one giving 1 FP/image here)
        shown = [f for f in data.findings if f.score >= threshold]
        lesion_boxes = {
            (lesion.lesion_id, v.sop_instance_uid): v.box
            for lesion in exam.lesions for v in lesion.views
        }

        def hit(view: FindingView, lesion_boxes: dict[tuple[str, str], Box] = lesion_boxes) -> set[str]:
            return {lid for (lid, uid), box in lesion_boxes.items()
                    if uid == view.sop_instance_uid and localises(view.box, box, iou)}

        for lesion in exam.lesions:
            if not criteria.includes(lesion) or len(lesion.views) != 2:
                continue
            lid = lesion.lesion_id
            views_hit = {v.view for f in shown for v in f.views if lid in hit(v)}
            if views_hit >= {View.CC, View.MLO}:
                both_detected += 1
                per_exam[e, 0] += 1
                if any(f.linked and all(lid in hit(v) for v in f.views) for f in shown):
                    linked_as_one += 1
                    per_exam[e, 1] += 1
        for f in shown:
            if not f.linked:
                continue
            linked_total += 1
            per_exam[e, 2] += 1
            a, b = (hit(v) for v in f.views)
            if not a and not b:
                false_pairs += 1
            elif not (a & b):
                wrong += 1
                per_exam[e, 3] += 1
            else:
                correct += 1
    return {
        "operating_threshold": _finite(threshold, 6),  # None where no threshold qualifies
        "lesions_detected_in_both_views": both_detected,
        "of_which_linked_as_one_finding": linked_as_one,
        "link_recall": round(linked_as_one / both_detected, 4) if both_detected else None,
        "linked_findings": linked_total,
        "linked_findings_joining_different_lesions_or_a_false_mark": wrong,
        "link_error_rate": round(wrong / linked_total, 4) if linked_total else None,
        "linked_findings_joining_two_false_marks": false_pairs,
        "linked_findings_joining_one_lesion": correct,
        "link_precision": round(correct / linked_total, 4) if linked_total else None,
    }, per_exam


@dataclass(frozen=True)
class _Marks:
    """The marks of every finding, once per view, with what the case analyses need of each."""

    dual: list[ScoredMark] = field(default_factory=list)
    single: list[ScoredMark] = field(default_factory=list)
    exam: list[int] = field(default_factory=list)
    laterality: list[str] = field(default_factory=list)
    linked: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class StandaloneAnalysis:
    """metrics.json content plus the curves the report draws and tabulates."""

    metrics: dict[str, Any]
    dual: FrocResult
    single: FrocResult
    froc_band: tuple[np.ndarray, np.ndarray, np.ndarray]  # FPI grid, CI low, CI high
    afroc: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (FPF, LLF)
    roc: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (FPR, TPR)
    #: endpoint name -> its point estimate and its value in every exam resample; two analyses of
    #: the same truth with the same resamples and seed draw the same exams in each resample, so
    #: the difference of their replicates is the paired bootstrap of the difference
    endpoints: dict[str, Endpoint] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of the analysis: point estimate, replicates, and how many units it counts."""

    estimate: float
    replicates: np.ndarray
    units: int


def _est(estimate: float, replicates: np.ndarray, digits: int = 4) -> dict[str, Any]:
    """A point estimate with its bootstrap percentile interval (None where undefined)."""
    low, high = bs.percentile_ci(replicates)

    return {"estimate": _finite(estimate, digits), "ci95": [_finite(low, digits), _finite(high, digits)]}


def _device(findings: Mapping[str, StudyResult]) -> dict[str, Any]:
    """Algorithm identification and locked operating point, required to be the same in all studies."""
    if not findings:
        raise EvaluationInputError("no findings.json to evaluate")
    algorithms = {r.algorithm for r in findings.values()}
    if len(algorithms) > 1:
        raise EvaluationInputError(f"findings come from {len(algorithms)} different algorithms/models")
    locked = sorted({r.operating_threshold for r in findings.values()})
    if len(locked) > 1:
        raise EvaluationInputError(f"findings come from models with different operating points: {locked}")
    first = result_to_dict(next(iter(findings.values())))
    return {"algorithm": first["algorithm"], "operating_point": first["operating_point"]}


def _collect_marks(truth: Truth, findings: Mapping[str, StudyResult]) -> tuple[_Marks, int, int]:
    """Marks of the studies in truth; also (studies without findings, images not analysed)."""
    marks = _Marks()
    not_analysed = missing_studies = 0
    for e, exam in enumerate(truth.exams):
        data = findings.get(exam.study_instance_uid)
        if data is None:
            missing_studies += 1
            continue
        not_analysed += sum(not i.analysed for i in data.images)
        for f in data.findings:
            for v in f.views:
                marks.dual.append(ScoredMark(v.sop_instance_uid, v.box, f.score))
                marks.single.append(ScoredMark(v.sop_instance_uid, v.box, v.score))
                marks.exam.append(e)
                marks.laterality.append(f.laterality.value)
                marks.linked.append(f.linked)
    return marks, missing_studies, not_analysed


def _exclusions(truth: Truth, criteria: Criteria) -> dict[str, Any]:
    """What was left out of the analysis and how much, by reason."""
    lesions: Counter[str] = Counter()
    views: Counter[str] = Counter()
    only_excluded = 0
    for exam in truth.exams:
        reasons = [criteria.exclusion_reason(lesion) for lesion in exam.lesions]
        only_excluded += bool(reasons) and all(r is not None for r in reasons)
        for lesion, reason in zip(exam.lesions, reasons):
            if reason is not None:
                lesions[reason] += 1
                views[reason] += len(lesion.views)
    return {
        "rule": criteria.describe(),
        "by_reason": [{"reason": r, "lesions": lesions[r], "lesion_views": views[r]} for r in sorted(lesions)],
        "lesions_excluded": sum(lesions.values()),
        "lesion_views_excluded": sum(views.values()),
        "exams_with_only_excluded_lesions": only_excluded,
    }


class _Froc:
    """One scoring's FROC, arranged by exam for the bootstrap."""

    def __init__(self, result: FrocResult, lesion_exam: np.ndarray, fp_exam: np.ndarray,
                 images: np.ndarray) -> None:
        n = images.size
        self.result = result
        self.ratings = np.nan_to_num(result.lesion_scores, nan=-np.inf)
        finite = self.ratings[np.isfinite(self.ratings)]
        self.thresholds = np.unique(finite)[::-1]  # sensitivity only changes at lesion ratings
        self.case_tp = bs.cumulative_counts(lesion_exam, self.ratings, self.thresholds, n)
        self.case_fp = bs.cumulative_counts(fp_exam, result.fp_scores, self.thresholds, n)
        self.case_lesions = np.bincount(lesion_exam, minlength=n).astype(np.float64)
        self.images = images.astype(np.float64)

    def points(self, weights: np.ndarray, fpi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sensitivity, threshold) per resample and FPI value; threshold inf where none qualifies."""
        sens, index = bs.froc_points(weights, self.case_tp, self.case_fp, self.case_lesions, self.images, fpi)
        padded = np.concatenate([self.thresholds, [np.inf]])
        return sens, padded[index]  # index -1 picks the appended inf


def _subset(result: FrocResult, keep: np.ndarray) -> FrocResult:
    """The same scoring restricted to some lesion views; false marks and images unchanged."""
    return FrocResult(tuple(i for i, k in zip(result.lesion_ids, keep) if k), result.lesion_scores[keep],
                      result.fp_scores, result.n_images, result.fp_marks, result.rating_mark[keep])


def _sensitivity_table(froc: _Froc, boot: np.ndarray) -> dict[str, Any]:
    """Sensitivity with its CI at each named FPI point (``boot``: resamples x FPI_POINTS)."""
    return {f"{f:g}": _est(froc.result.sensitivity_at(f), boot[:, j]) for j, f in enumerate(FPI_POINTS)}


def _detectability(included: list[IncludedView], dual: _Froc,
                   lesion_exam: np.ndarray, mark_fp_exam: np.ndarray, images: np.ndarray,
                   weights: np.ndarray) -> dict[str, Any] | None:
    """Sensitivity on visible and on not-visible lesion views, and the share the template
    observer calls visible (per view and per lesion in either view): a descriptive stratum, not
    a ceiling (the detector finds views it calls not visible); None when truth records none."""
    labels = np.array([visibility(view) for _, _, view in included], dtype=object)
    recorded = labels != VISIBILITY[2]
    if not recorded.any():
        return None
    visible = labels == VISIBILITY[0]
    per_view = bs.weighted_proportion(weights, lesion_exam, visible, recorded[:, None])[:, 0]
    ones = np.ones((1, weights.shape[1]))
    keys = list(dict.fromkeys((e, lesion.lesion_id) for e, lesion, _ in included))
    index = {key: i for i, key in enumerate(keys)}
    either = np.zeros(len(keys), dtype=bool)
    lesion_recorded = np.zeros(len(keys), dtype=bool)
    for (e, lesion, _), v, r in zip(included, visible, recorded):
        either[index[(e, lesion.lesion_id)]] |= bool(v)
        lesion_recorded[index[(e, lesion.lesion_id)]] |= bool(r)
    lesion_exams = np.array([e for e, _ in keys], dtype=np.int64)
    per_lesion = bs.weighted_proportion(weights, lesion_exams, either, lesion_recorded[:, None])[:, 0]
    out: dict[str, Any] = {
        "definition": "docs/phantom.md (visible: at most one local maximum outranks the lesion "
                      "for at least one of three signal-known-exactly matched filters)",
        "lesion_views_recorded": int(recorded.sum()),
        "lesion_views_visible": int(visible.sum()),
        "visible_share_views": _est(
            bs.weighted_proportion(ones, lesion_exam, visible, recorded[:, None])[0, 0], per_view),
        "lesions_recorded": int(lesion_recorded.sum()),
        "lesions_visible_in_either_view": int(either[lesion_recorded].sum()),
        "visible_share_lesions": _est(
            bs.weighted_proportion(ones, lesion_exams, either, lesion_recorded[:, None])[0, 0], per_lesion),
    }
    for name, mask in (("visible", visible), ("not_visible", recorded & ~visible)):
        sub = _Froc(_subset(dual.result, mask), lesion_exam[mask], mark_fp_exam, images)
        sens, _ = sub.points(weights, np.asarray(FPI_POINTS))
        out[name] = {"lesion_views": int(mask.sum()), "sensitivity_at_fpi": _sensitivity_table(sub, sens)}
    return out


def _per_lesion(dual: FrocResult, physical_exam: np.ndarray, lesion_rating: np.ndarray,
                mark_fp_exam: np.ndarray, images: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    """Sensitivity per lesion, found when a mark localises it in either view, against false
    marks per image (dual-view scores)."""
    ratings = np.where(np.isfinite(lesion_rating), lesion_rating, np.nan)
    result = FrocResult(tuple((str(e), str(k)) for k, e in enumerate(physical_exam)), ratings,
                        dual.fp_scores, dual.n_images, dual.fp_marks, np.zeros(len(ratings), dtype=np.int64))
    froc = _Froc(result, physical_exam, mark_fp_exam, images)
    sens, _ = froc.points(weights, np.asarray(FPI_POINTS))
    return {"unit": "lesion, localised in either view; false marks per image over all images",
            "lesions": int(len(ratings)), "sensitivity_at_fpi": _sensitivity_table(froc, sens)}


def _strata(truth: Truth, lesions: list[IncludedView],
            linked_rating: np.ndarray, rated: np.ndarray) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Subgroup memberships of the included lesion views: grouping -> [(stratum, mask)].

    Every grouping partitions the lesion views, so its counts add up to the total.
    """
    exams = truth.exams
    keys = {
        "lesion type": [lesion.type for _, lesion, _ in lesions],
        "mass shape": [lesion.shape or "not recorded" for _, lesion, _ in lesions],
        "size band": [size_band(lesion.diameter_mm) for _, lesion, _ in lesions],
        "breast density": [exams[e].density or "not recorded" for e, _, _ in lesions],
        "view": [view.view.value for _, _, view in lesions],
        "lesion visible in": ["both views" if len(lesion.views) == 2 else "one view" for _, lesion, _ in lesions],
        "detectability (ideal observer)": [visibility(view) for _, _, view in lesions],
        "localising finding": [
            "linked (dual-view) finding" if r and ln else "single-view finding" if r else "no finding at any score"
            for r, ln in zip(rated, linked_rating)
        ],
    }
    order = {"size band": list(SIZE_BANDS), "breast density": ["A", "B", "C", "D", "not recorded"],
             "detectability (ideal observer)": list(VISIBILITY),
             "localising finding": ["linked (dual-view) finding", "single-view finding", "no finding at any score"]}
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, labels in keys.items():
        values = np.asarray(labels, dtype=object)
        present = sorted(set(labels))
        ranked = [v for v in order.get(name, present) if v in present]
        out[name] = [(v, values == v) for v in ranked]
    return out


def _unit_scores(n_units: int, unit_of_mark: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Highest mark score per unit, -inf for a unit without marks."""
    best = np.full(n_units, -np.inf)
    if unit_of_mark.size:
        np.maximum.at(best, unit_of_mark, scores)
    return best


def _lesions_in_breast(included: list[IncludedView],
                       view_ratings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(exam, rating) of each included lesion in the breast; rating = best over its views."""
    keys = list(dict.fromkeys((e, lesion.lesion_id) for e, lesion, _ in included))
    index = {key: i for i, key in enumerate(keys)}
    rating = np.full(len(keys), -np.inf)
    if keys:
        of_view = np.array([index[(e, lesion.lesion_id)] for e, lesion, _ in included], dtype=np.int64)
        np.maximum.at(rating, of_view, view_ratings)
    return np.array([e for e, _ in keys], dtype=np.int64), rating


def _breasts(exams: Sequence[TruthExam], marks: _Marks, mark_scores: np.ndarray,
             included: list[IncludedView]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per breast (exam x imaged laterality): exam index, highest finding score, holds an included lesion."""
    breasts = [(e, side) for e, exam in enumerate(exams)
               for side in sorted({im.laterality.value for im in exam.images})]
    index = {b: i for i, b in enumerate(breasts)}
    of_mark = np.array([index.get(b, -1) for b in zip(marks.exam, marks.laterality)], dtype=np.int64)
    shown = of_mark >= 0
    positive = np.zeros(len(breasts), dtype=bool)
    positive[[index[b] for b in {(e, lesion.laterality.value) for e, lesion, _ in included} if b in index]] = True
    return (np.array([e for e, _ in breasts], dtype=np.int64),
            _unit_scores(len(breasts), of_mark[shown], mark_scores[shown]), positive)


def analyse(truth: Truth | Mapping[str, Any], findings: Mapping[str, StudyResult], criteria: Criteria | None = None,
            n_resamples: int = bs.DEFAULT_RESAMPLES, seed: int = bs.DEFAULT_SEED) -> StandaloneAnalysis:
    """The standalone performance analysis: FROC, AFROC/wAFROC, case/breast ROC, subgroups, CIs.
    ``truth``: from :func:`load_truth`, or truth.json content (parsed here)."""
    criteria = criteria or Criteria()
    truth = as_truth(truth)
    exams = truth.exams
    n_exams = len(exams)
    device = _device(findings)
    lesions = _lesions(truth, criteria)
    lesion_meta = [(e, lesion, view) for e, exam in enumerate(exams)
                   for lesion in exam.lesions for view in lesion.views]
    image_ids = [im.sop_instance_uid for exam in exams for im in exam.images]
    images = np.array([len(exam.images) for exam in exams])
    marks, missing_studies, not_analysed = _collect_marks(truth, findings)
    if missing_studies == n_exams:
        raise EvaluationInputError(f"the findings cover none of the {n_exams} exams in the truth "
                                   "(other studies, or the wrong folder)")
    mark_exam = np.asarray(marks.exam, dtype=np.int64)
    dual_result = score_marks(marks.dual, lesions, image_ids, criteria.iou_threshold)
    single_result = score_marks(marks.single, lesions, image_ids, criteria.iou_threshold)

    keep = [k for k, lesion in enumerate(lesions) if lesion.included]
    included = [lesion_meta[k] for k in keep]
    lesion_exam = np.array([e for e, _, _ in included], dtype=np.int64)
    dual = _Froc(dual_result, lesion_exam, mark_exam[dual_result.fp_marks], images)
    single = _Froc(single_result, lesion_exam, mark_exam[single_result.fp_marks], images)

    # AFROC/wAFROC: lesion in the breast rated by its best view; normal exam by its best false mark
    physical_exam, lesion_rating = _lesions_in_breast(included, dual.ratings)
    per_exam = np.bincount(physical_exam, minlength=n_exams)
    lesion_weight = 1.0 / per_exam[physical_exam] if physical_exam.size else np.zeros(0)
    normal = np.flatnonzero(per_exam == 0)
    normal_fp = _unit_scores(n_exams, mark_exam[dual_result.fp_marks], dual_result.fp_scores)[normal]

    # case and breast ROC: highest finding score; positive = holds an included lesion
    dual_scores = np.array([m.score for m in marks.dual])
    case_score = _unit_scores(n_exams, mark_exam, dual_scores)
    case_positive = per_exam > 0
    breast_exam, breast_score, breast_positive = _breasts(exams, marks, dual_scores, included)

    locked_threshold = float(device["operating_point"]["threshold"])
    threshold_1fpi = dual_result.threshold_at(1.0)
    rated = dual_result.rating_mark >= 0
    linked_rating = np.array([bool(r) and marks.linked[m] for r, m in zip(rated, dual_result.rating_mark)],
                             dtype=bool)
    strata = _strata(truth, included, linked_rating, rated)

    # ---- exam-level bootstrap: every statistic for every resample at once ----
    started = time.perf_counter()
    weights = bs.case_weights(bs.resample_indices(n_exams, n_resamples, seed), n_exams)
    ones = np.ones((1, n_exams))
    fpi_all = np.concatenate([FPI_POINTS, FROC_BAND_FPI])
    dual_sens, dual_thr = dual.points(weights, fpi_all)
    single_sens, _ = single.points(weights, fpi_all)
    one_fpi = FPI_POINTS.index(1.0)
    everything = np.ones((len(included), 1), dtype=bool)
    locked_sens = bs.weighted_proportion(weights, lesion_exam, dual.ratings >= locked_threshold, everything)[:, 0]
    fp_locked = np.bincount(mark_exam[dual_result.fp_marks][dual_result.fp_scores >= locked_threshold],
                            minlength=n_exams)
    locked_fpi = (weights @ fp_locked) / np.maximum(weights @ images, 1.0)
    afroc_b = bs.pairwise_fom(weights, normal, normal_fp, physical_exam, lesion_rating)
    wafroc_b = bs.pairwise_fom(weights, normal, normal_fp, physical_exam, lesion_rating, lesion_weight)
    neg, pos = np.flatnonzero(~case_positive), np.flatnonzero(case_positive)
    case_auc_b = bs.pairwise_fom(weights, neg, case_score[neg], pos, case_score[pos])
    bneg, bpos = np.flatnonzero(~breast_positive), np.flatnonzero(breast_positive)
    breast_auc_b = bs.pairwise_fom(weights, breast_exam[bneg], breast_score[bneg], breast_exam[bpos],
                                   breast_score[bpos])
    hits_1fpi_b = dual.ratings[None, :] >= dual_thr[:, one_fpi][:, None]
    subgroup_b = {}
    for name, groups in strata.items():
        mask = np.stack([m for _, m in groups], axis=1) if groups else np.zeros((len(included), 0), dtype=bool)
        subgroup_b[name] = (
            bs.weighted_proportion(ones, lesion_exam, dual.ratings >= locked_threshold, mask)[0],
            bs.weighted_proportion(weights, lesion_exam, dual.ratings >= locked_threshold, mask),
            bs.weighted_proportion(ones, lesion_exam, dual.ratings >= threshold_1fpi, mask)[0],
            bs.weighted_proportion(weights, lesion_exam, hits_1fpi_b, mask),
        )
    fp_exam = mark_exam[dual_result.fp_marks]
    linking, link_exam = _linking_counts(truth, findings, locked_threshold, criteria)
    with np.errstate(invalid="ignore", divide="ignore"):
        link_recall_b = (weights @ link_exam[:, 1]) / (weights @ link_exam[:, 0])
        link_error_b = (weights @ link_exam[:, 3]) / (weights @ link_exam[:, 2])
    lesion_found = np.nan_to_num(lesion_rating, nan=-np.inf, neginf=-np.inf) >= locked_threshold
    per_lesion_b = bs.weighted_proportion(weights, physical_exam, lesion_found,
                                          np.ones((physical_exam.size, 1), dtype=bool))[:, 0]

    def ratio(num: float, den: float) -> float:
        return num / den if den else float("nan")

    endpoints = {
        "sensitivity_at_operating_point": Endpoint(dual_result.sensitivity_at_threshold(locked_threshold), locked_sens,
                                                   len(included)),
        "fpi_at_operating_point": Endpoint(dual_result.fpi_at_threshold(locked_threshold), locked_fpi, len(image_ids)),
        "per_lesion_sensitivity_at_operating_point": Endpoint(float(lesion_found.mean()) if lesion_found.size else
                                                              float("nan"), per_lesion_b, int(physical_exam.size)),
        "afroc": Endpoint(afroc_fom(normal_fp, lesion_rating), afroc_b, int(physical_exam.size)),
        "wafroc": Endpoint(afroc_fom(normal_fp, lesion_rating, lesion_weight), wafroc_b, int(physical_exam.size)),
        "link_recall_at_operating_point": Endpoint(ratio(link_exam[:, 1].sum(), link_exam[:, 0].sum()), link_recall_b,
                                                   int(link_exam[:, 0].sum())),
        "link_error_rate_at_operating_point": Endpoint(ratio(link_exam[:, 3].sum(), link_exam[:, 2].sum()), link_error_b,
                                                       int(link_exam[:, 2].sum())),
    }
    for name, (point_locked, boot_locked, _, _) in subgroup_b.items():
        for j, (label, mask) in enumerate(strata[name]):
            endpoints[f"subgroup:{name}:{label}"] = Endpoint(float(point_locked[j]), boot_locked[:, j], int(mask.sum()))
    detectability = _detectability(included, dual, lesion_exam, fp_exam, images, weights)
    per_lesion = _per_lesion(dual_result, physical_exam, lesion_rating, fp_exam, images, weights)
    seconds = time.perf_counter() - started
    band_low, band_high = bs.percentile_ci(dual_sens[:, len(FPI_POINTS):])

    named = list(enumerate((f"{f:g}", f) for f in FPI_POINTS))
    subgroups = {
        name: [
            {
                "stratum": label,
                "lesion_views": int(mask.sum()),
                "lesions": len({(included[i][0], included[i][1].lesion_id) for i in np.flatnonzero(mask)}),
                "sensitivity_at_locked_threshold": _est(point_locked[j], boot_locked[:, j]),
                "sensitivity_at_1fpi": _est(point_1fpi[j], boot_1fpi[:, j]),
            }
            for j, (label, mask) in enumerate(strata[name])
        ]
        for name, (point_locked, boot_locked, point_1fpi, boot_1fpi) in subgroup_b.items()
    }
    densities = Counter(exam.density or "not recorded" for exam in exams)
    generator = truth.generator or ""
    metrics: dict[str, Any] = {
        "criteria": criteria.describe(),
        "data": {
            "exams": n_exams, "images": len(image_ids),
            "studies_without_findings": missing_studies, "images_not_analysed": not_analysed,
            "included_lesions": len({l.lesion_id for l in lesions if l.included}),
            "included_lesion_views": sum(l.included for l in lesions),
            "seed": truth.seed,
            "exams_with_included_lesions": int(case_positive.sum()),
            "exams_without_included_lesions": int((~case_positive).sum()),
            "exams_without_any_lesion": sum(not exam.lesions for exam in exams),
            "breasts": int(breast_exam.size), "breasts_with_included_lesions": int(breast_positive.sum()),
            "density_exams": dict(sorted(densities.items())),
        },
        "device": device,
        "reference_standard": {
            "kind": "synthetic phantom truth (lesion positions known by construction)" if "phantom" in generator
            else "dataset truth converted to truth.json",
            "generator": truth.generator, "schema_version": truth.schema_version,
            "seed": truth.seed,
        },
        "exclusions": _exclusions(truth, criteria),
        "dual_view": _summary(dual_result),
        "single_view": _summary(single_result),
        "fusion_gain": {f"{f:g}": round(dual_result.sensitivity_at(f) - single_result.sensitivity_at(f), 4)
                        for f in FPI_POINTS},
        "froc": {
            "unit": "lesion per view; false marks per image over all images",
            "dual_view_sensitivity_at_fpi": {
                k: _est(dual_result.sensitivity_at(f), dual_sens[:, j]) for j, (k, f) in named},
            "single_view_sensitivity_at_fpi": {
                k: _est(single_result.sensitivity_at(f), single_sens[:, j]) for j, (k, f) in named},
            "fusion_gain_at_fpi": {  # paired: both scorings on the same resamples
                k: _est(dual_result.sensitivity_at(f) - single_result.sensitivity_at(f),
                        dual_sens[:, j] - single_sens[:, j]) for j, (k, f) in named},
        },
        "per_lesion": per_lesion,
        "detectability": detectability,
        "operating_point": {
            "locked_threshold": locked_threshold,
            "sensitivity": round(dual_result.sensitivity_at_threshold(locked_threshold), 4),
            "fpi": round(dual_result.fpi_at_threshold(locked_threshold), 4),
            "sensitivity_ci95": _est(dual_result.sensitivity_at_threshold(locked_threshold), locked_sens)["ci95"],
            "fpi_ci95": _est(dual_result.fpi_at_threshold(locked_threshold), locked_fpi)["ci95"],
        },
        "afroc": {"normal_exams": int(normal.size), "lesions": int(physical_exam.size),
                  **_est(afroc_fom(normal_fp, lesion_rating), afroc_b)},
        "wafroc": {"normal_exams": int(normal.size), "abnormal_exams": int(case_positive.sum()),
                   **_est(afroc_fom(normal_fp, lesion_rating, lesion_weight), wafroc_b)},
        "roc": {
            "case": {"positive": int(pos.size), "negative": int(neg.size),
                     **_est(auc(case_score[neg], case_score[pos]), case_auc_b)},
            "breast": {"positive": int(bpos.size), "negative": int(bneg.size),
                       **_est(auc(breast_score[bneg], breast_score[bpos]), breast_auc_b)},
        },
        "subgroups": subgroups,
        "subgroup_thresholds": {"locked": locked_threshold, "1fpi": _finite(threshold_1fpi, 6)},
        "bootstrap": {
            "unit": "exam", "resamples": n_resamples, "seed": seed, "interval": "95 % percentile",
            "seconds": round(seconds, 3),
            "undefined_resamples": {
                "afroc": int(np.isnan(afroc_b).sum()), "case_auc": int(np.isnan(case_auc_b).sum()),
                "breast_auc": int(np.isnan(breast_auc_b).sum()),
            },
        },
        # linking at the locked operating point (set at 1 FPI on validation data) and at the
        # threshold giving 1 FPI on these data
        "linking": linking,
        "linking_at_1fpi_here": _linking(truth, findings, threshold_1fpi, criteria),
    }
    location = _location_accuracy(truth, findings, locked_threshold, criteria)
    if location is not None:  # truth 1.2 positions and findings.json 1.4 locations
        metrics["location"] = location
    return StandaloneAnalysis(
        metrics=metrics, dual=dual_result, single=single_result,
        froc_band=(FROC_BAND_FPI, band_low, band_high),
        afroc={"AFROC": afroc_curve(normal_fp, lesion_rating),
               "wAFROC": afroc_curve(normal_fp, lesion_rating, lesion_weight)},
        roc={"case": roc_curve(case_score[neg], case_score[pos]),
             "breast": roc_curve(breast_score[bneg], breast_score[bpos])},
        endpoints=endpoints,
    )


def evaluate(truth: Truth | Mapping[str, Any], findings: Mapping[str, StudyResult], criteria: Criteria | None = None,
             n_resamples: int = bs.DEFAULT_RESAMPLES, seed: int = bs.DEFAULT_SEED) -> dict[str, Any]:
    """metrics.json content of :func:`analyse` (FROC, fusion gain, linking, FOMs with CIs)."""
    return analyse(truth, findings, criteria, n_resamples, seed).metrics
