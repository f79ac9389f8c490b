"""Standalone-performance figures and the exam-level bootstrap on constructed exams and marks.

Every expected value below follows from the definitions (pairs of ratings compared one by one),
not from the code under test.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats

from cad.result.findings_json import result_from_dict
from verification import bootstrap as bs
from verification.froc import afroc_curve, afroc_fom, psi
from verification.roc import auc, roc_curve
from verification.standalone import Criteria, EvaluationInputError, analyse, load_truth
from verification.truth import Truth, TruthError, parse_truth

LESION_BOX = [100, 100, 200, 200]
ON_LESION = [120, 120, 180, 180]  # centre (150, 150): inside LESION_BOX
ELSEWHERE = [400, 400, 450, 450]


def _uid(exam: int, side: str, view: str) -> str:
    return f"1.2.{exam + 1}.{'LR'.index(side) + 1}{1 if view == 'CC' else 2}"


def _dataset() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Five exams: two with masses, two normal, one with a calcification cluster only.

    exam 0 (B): 15 mm mass right CC+MLO, linked finding 0.9 on both views; false mark 0.4
    exam 1 (C): 8.5 mm mass left CC (unmarked), 25 mm mass left MLO (single-view finding 0.6)
    exam 2 (C): normal; false marks 0.7 (L CC) and 0.2 (R MLO)
    exam 3 (D): normal; no finding
    exam 4 (A): calcification cluster right CC+MLO (excluded) marked 0.95; false mark 0.1 (L MLO)
    """
    lesions = {
        0: [("L1", "mass", 15.0, "R", ["CC", "MLO"])],
        1: [("L2", "mass", 8.5, "L", ["CC"]), ("L3", "mass", 25.0, "L", ["MLO"])],
        4: [("C1", "calcification_cluster", 6.0, "R", ["CC", "MLO"])],
    }
    marks = {  # (laterality, finding score, [(view, box, view score)])
        0: [("R", 0.9, [("CC", ON_LESION, 0.8), ("MLO", ON_LESION, 0.7)]), ("R", 0.4, [("CC", ELSEWHERE, 0.4)])],
        1: [("L", 0.6, [("MLO", ON_LESION, 0.6)])],
        2: [("L", 0.7, [("CC", ELSEWHERE, 0.7)]), ("R", 0.2, [("MLO", ELSEWHERE, 0.2)])],
        3: [],
        4: [("R", 0.95, [("CC", ON_LESION, 0.95)]), ("L", 0.1, [("MLO", ELSEWHERE, 0.1)])],
    }
    density = ["B", "C", "C", "D", "A"]
    exams, findings = [], {}
    for e in range(5):
        study = f"1.2.{e + 1}"
        images = [{"path": f"e{e}/{s}_{v}.dcm", "sop_instance_uid": _uid(e, s, v), "laterality": s, "view": v}
                  for s in "LR" for v in ("CC", "MLO")]
        exams.append({
            "study_instance_uid": study, "density": density[e], "images": images,
            "lesions": [{"lesion_id": lid, "type": kind, "shape": "oval", "diameter_mm": d, "laterality": side,
                         "views": [{"sop_instance_uid": _uid(e, side, v), "view": v, "box": LESION_BOX}
                                   for v in views]}
                        for lid, kind, d, side, views in lesions.get(e, [])],
        })
        findings[study] = result_from_dict({
            "schema_version": "1.0", "study_instance_uid": study,
            "algorithm": {"name": "test", "version": "0", "model_sha256": "0" * 64},
            "operating_point": {"threshold": 0.5},
            "images": [{"sop_instance_uid": i["sop_instance_uid"], "laterality": i["laterality"], "view": i["view"],
                        "status": "analyzed", "reason": None} for i in images],
            "findings": [
                {"finding_id": f"F{k + 1:03d}", "laterality": side, "type": "mass", "score": score,
                 "linked": len(views) == 2,
                 "views": [{"sop_instance_uid": _uid(e, side, v), "view": v, "box": box, "score": vs}
                           for v, box, vs in views]}
                for k, (side, score, views) in enumerate(marks[e])
            ],
        })
    return {"generator": "hand-made", "exams": exams}, findings


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    truth, findings = _dataset()
    return analyse(truth, findings, Criteria(), n_resamples=1000, seed=1).metrics


def _pairwise(negatives: list[float], positives: list[float], weights: list[float] | None = None) -> float:
    """The Wilcoxon definition, one pair at a time."""
    weights = weights or [1.0] * len(positives)
    total = 0.0
    for fp in negatives:
        for ll, w in zip(positives, weights):
            total += w * (1.0 if ll > fp else 0.5 if ll == fp else 0.0)
    return total / (len(negatives) * sum(weights))


@pytest.mark.req("SRS-PERF-002")
def test_afroc_and_wafroc_fom_on_a_hand_example() -> None:
    inf = float("inf")
    normal_fp = np.array([0.3, -inf, 0.8])
    lesion_ll = np.array([0.9, 0.3, -inf, 0.5])
    weights = np.array([0.5, 0.5, 1.0, 1.0])  # lesions 1-2 share an exam; three abnormal exams
    # by hand: FP 0.3 -> 1 + .5 + 0 + 1; FP -inf -> 1 + 1 + .5 + 1; FP 0.8 -> 1 + 0 + 0 + 0
    assert afroc_fom(normal_fp, lesion_ll) == pytest.approx(7 / 12)
    # weighted: 0.3 -> .5 + .25 + 0 + 1; -inf -> .5 + .5 + .5 + 1; 0.8 -> .5; over 3 normal x 3 abnormal
    assert afroc_fom(normal_fp, lesion_ll, weights) == pytest.approx(4.75 / 9)
    assert afroc_fom(normal_fp, lesion_ll) == pytest.approx(_pairwise(list(normal_fp), list(lesion_ll)))
    for w in (None, weights):
        fpf, llf = afroc_curve(normal_fp, lesion_ll, w)
        assert (fpf[0], llf[0], fpf[-1], llf[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert np.trapezoid(llf, fpf) == pytest.approx(afroc_fom(normal_fp, lesion_ll, w))
    assert np.isnan(afroc_fom(np.array([]), lesion_ll))


@pytest.mark.req("SRS-PERF-002")
def test_roc_auc_equals_mann_whitney() -> None:
    rng = np.random.default_rng(3)
    negative = np.round(rng.normal(0.0, 1.0, 40), 1)  # rounding makes ties
    positive = np.round(rng.normal(0.8, 1.0, 25), 1)
    u = scipy.stats.mannwhitneyu(positive, negative).statistic
    assert auc(negative, positive) == pytest.approx(u / (40 * 25))
    fpr, tpr = roc_curve(negative, positive)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc(negative, positive))
    assert psi(np.array([1.0]), np.array([2.0, 1.0, 0.0])).tolist() == [[1.0, 0.5, 0.0]]


@pytest.mark.req("SRS-PERF-001", "SRS-PERF-002")
def test_figures_of_merit_of_the_constructed_exams(metrics: dict[str, Any]) -> None:
    inf = float("inf")
    # normal exams 2, 3, 4 (exam 4: its mark on the excluded cluster is ignored) rated 0.7, -inf, 0.1;
    # lesions in the breast L1 0.9 (best view), L2 -inf (unmarked), L3 0.6
    assert metrics["afroc"]["normal_exams"] == 3 and metrics["afroc"]["lesions"] == 3
    assert metrics["afroc"]["estimate"] == pytest.approx(_pairwise([0.7, -inf, 0.1], [0.9, -inf, 0.6]), abs=1e-4)
    assert metrics["afroc"]["estimate"] == pytest.approx(5.5 / 9, abs=1e-4)
    assert metrics["wafroc"]["estimate"] == pytest.approx(4.25 / 6, abs=1e-4)
    # case ROC: highest finding score, marks on excluded lesions kept (exam 4 scores 0.95)
    assert metrics["roc"]["case"]["estimate"] == pytest.approx(
        _pairwise([0.7, -inf, 0.95], [0.9, 0.6]), abs=1e-4)
    assert metrics["roc"]["breast"]["estimate"] == pytest.approx(13 / 16, abs=1e-4)
    # FROC per lesion view: L1-CC 0.9, L1-MLO 0.9, L2-CC unmarked, L3-MLO 0.6; false marks 0.4, 0.7, 0.2,
    # 0.1 over 20 images
    assert metrics["data"]["included_lesion_views"] == 4 and metrics["data"]["images"] == 20
    assert metrics["operating_point"]["sensitivity"] == 0.75 and metrics["operating_point"]["fpi"] == 0.05
    assert metrics["froc"]["dual_view_sensitivity_at_fpi"]["0.125"]["estimate"] == 0.75
    assert metrics["dual_view"]["sensitivity_at_fpi"]["0.125"] == 0.75
    assert metrics["exclusions"]["by_reason"] == [
        {"reason": "type calcification_cluster not analysed", "lesions": 1, "lesion_views": 2}]
    assert metrics["exclusions"]["exams_with_only_excluded_lesions"] == 1


@pytest.mark.req("SRS-PERF-004")
def test_strata_partition_the_lesion_views(metrics: dict[str, Any]) -> None:
    total = metrics["data"]["included_lesion_views"]
    overall = metrics["operating_point"]["sensitivity"]
    for name, strata in metrics["subgroups"].items():
        assert sum(s["lesion_views"] for s in strata) == total, name
        hits = sum(s["lesion_views"] * s["sensitivity_at_locked_threshold"]["estimate"] for s in strata)
        assert hits == pytest.approx(overall * total), name
    by = {name: {s["stratum"]: s for s in strata} for name, strata in metrics["subgroups"].items()}
    assert {k: v["lesion_views"] for k, v in by["size band"].items()} == {"<10 mm": 1, "10-20 mm": 2, ">20 mm": 1}
    assert {k: v["lesion_views"] for k, v in by["view"].items()} == {"CC": 2, "MLO": 2}
    finding = by["localising finding"]
    assert finding["linked (dual-view) finding"]["lesion_views"] == 2
    assert finding["single-view finding"]["lesion_views"] == 1
    assert finding["no finding at any score"]["sensitivity_at_locked_threshold"]["estimate"] == 0.0
    assert by["lesion visible in"]["both views"]["lesions"] == 1
    assert by["breast density"]["C"]["sensitivity_at_1fpi"]["estimate"] == 0.5


def _random_exams(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """Exams with 0-2 lesions (rating or -inf), 0-4 false-mark scores and 4 images each."""
    exams = []
    for _ in range(n):
        lesions = [float(rng.choice([-np.inf, np.round(rng.uniform(), 2)])) for _ in range(rng.integers(0, 3))]
        exams.append({"lesions": lesions, "fp": list(np.round(rng.uniform(size=rng.integers(0, 5)), 2)), "images": 4})
    return exams


def _slow_froc_sensitivity(lesions: list[float], fps: list[float], images: int, fpi: float) -> float:
    best = 0.0
    for t in sorted({s for s in lesions + fps if np.isfinite(s)}, reverse=True):  # unmarked: never found
        if sum(f >= t for f in fps) / images <= fpi + 1e-12:
            best = max(best, sum(r >= t for r in lesions) / len(lesions))
    return best


@pytest.mark.req("SRS-PERF-003")
def test_vectorised_resamples_equal_a_loop() -> None:
    rng = np.random.default_rng(11)
    exams = _random_exams(rng, 9)
    n = len(exams)
    indices = bs.resample_indices(n, 60, seed=5)
    weights = bs.case_weights(indices, n)
    assert (weights.sum(axis=1) == n).all()

    normal = np.array([e for e in range(n) if not exams[e]["lesions"]])
    normal_fp = np.array([max(exams[e]["fp"], default=-np.inf) for e in normal])
    lesion_case = np.array([e for e in range(n) for _ in exams[e]["lesions"]])
    ratings = np.array([r for e in range(n) for r in exams[e]["lesions"]])
    lesion_weight = 1.0 / np.array([len(exams[e]["lesions"]) for e in lesion_case])
    afroc = bs.pairwise_fom(weights, normal, normal_fp, lesion_case, ratings)
    wafroc = bs.pairwise_fom(weights, normal, normal_fp, lesion_case, ratings, lesion_weight)

    thresholds = np.unique(ratings[np.isfinite(ratings)])[::-1]
    fp_case = np.array([e for e in range(n) for _ in exams[e]["fp"]])
    fp_scores = np.array([s for e in range(n) for s in exams[e]["fp"]])
    sens, _ = bs.froc_points(
        weights, bs.cumulative_counts(lesion_case, ratings, thresholds, n),
        bs.cumulative_counts(fp_case, fp_scores, thresholds, n),
        np.bincount(lesion_case, minlength=n).astype(float), np.full(n, 4.0), np.array([0.25, 1.0]))

    for b, row in enumerate(indices):
        drawn = [exams[e] for e in row]
        normals = [max(x["fp"], default=-np.inf) for x in drawn if not x["lesions"]]
        lesions = [r for x in drawn for r in x["lesions"]]
        weights_b = [1 / len(x["lesions"]) for x in drawn for _ in x["lesions"]]
        if normals and lesions:
            assert afroc[b] == pytest.approx(_pairwise(normals, lesions))
            assert wafroc[b] == pytest.approx(_pairwise(normals, lesions, weights_b))
        else:
            assert np.isnan(afroc[b]) and np.isnan(wafroc[b])
        fps = [s for x in drawn for s in x["fp"]]
        for j, f in enumerate((0.25, 1.0)):
            expected = _slow_froc_sensitivity(lesions, fps, 4 * n, f) if lesions else np.nan
            assert sens[b, j] == pytest.approx(expected, nan_ok=True)


@pytest.mark.req("SRS-PERF-003")
def test_same_seed_same_intervals_and_intervals_hold_the_estimate() -> None:
    truth, findings = _dataset()

    def run(seed: int) -> dict[str, Any]:
        m = analyse(truth, findings, Criteria(), n_resamples=1000, seed=seed).metrics
        m["bootstrap"].pop("seconds")
        return m

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first["afroc"]["ci95"] != other["afroc"]["ci95"]
    assert first["bootstrap"]["resamples"] == 1000 and first["bootstrap"]["seed"] == 7
    estimates = [first["afroc"], first["wafroc"], first["roc"]["case"], first["roc"]["breast"],
                 *first["froc"]["dual_view_sensitivity_at_fpi"].values(),
                 *(s["sensitivity_at_locked_threshold"] for g in first["subgroups"].values() for s in g)]
    for value in estimates:
        low, high = value["ci95"]
        assert low <= value["estimate"] <= high
    op = first["operating_point"]
    assert op["sensitivity_ci95"][0] <= op["sensitivity"] <= op["sensitivity_ci95"][1]
    assert op["fpi_ci95"][0] <= op["fpi"] <= op["fpi_ci95"][1]


def _with_detectability(truth: dict[str, Any], visible: dict[tuple[str, str], bool]) -> dict[str, Any]:
    """A copy of ``truth`` whose lesion views named in ``visible`` (lesion ID, view) carry a record."""
    out = copy.deepcopy(truth)
    for exam in out["exams"]:
        for lesion in exam["lesions"]:
            for view in lesion["views"]:
                key = (lesion["lesion_id"], view["view"])
                if key in visible:
                    view["detectability"] = {"definition": "1.0", "snr": 1.0, "visible": visible[key],
                                             "rank": {"raw": 1, "zero_mean": 1, "prewhitened": 1}}
    return out


@pytest.mark.req("SRS-PERF-006")
def test_sensitivity_split_by_what_the_ideal_observer_finds() -> None:
    truth, findings = _dataset()
    marked = _with_detectability(truth, {("L1", "CC"): True, ("L1", "MLO"): False, ("L2", "CC"): False,
                                         ("L3", "MLO"): True, ("C1", "CC"): True})
    m = analyse(marked, findings, Criteria(), n_resamples=1000, seed=1).metrics
    det = m["detectability"]
    # included mass views: L1-CC, L1-MLO, L2-CC, L3-MLO (the cluster is excluded); 2 of 4 visible
    assert (det["lesion_views_recorded"], det["lesion_views_visible"]) == (4, 2)
    assert det["visible_share_views"]["estimate"] == 0.5
    # lesions visible in either view: L1 (CC) and L3, not L2
    assert (det["lesions_recorded"], det["lesions_visible_in_either_view"]) == (3, 2)
    assert det["visible_share_lesions"]["estimate"] == pytest.approx(2 / 3, abs=1e-4)
    # at 0.125 FPI (at most 2 of the false marks 0.7, 0.4, 0.2, 0.1 over 20 images) the threshold is 0.4:
    # visible L1-CC 0.9 and L3-MLO 0.6 found; not visible L1-MLO 0.9 found, L2-CC unmarked
    assert det["visible"]["sensitivity_at_fpi"]["0.125"]["estimate"] == 1.0
    assert det["not_visible"]["sensitivity_at_fpi"]["0.125"]["estimate"] == 0.5
    assert (det["visible"]["lesion_views"], det["not_visible"]["lesion_views"]) == (2, 2)
    by = {s["stratum"]: s for s in m["subgroups"]["detectability (ideal observer)"]}
    assert by["visible"]["lesion_views"] == 2 and by["not visible"]["lesion_views"] == 2


@pytest.mark.req("SRS-PERF-006")
def test_per_lesion_sensitivity_counts_either_view(metrics: dict[str, Any]) -> None:
    # lesions in the breast: L1 (0.9 in both views), L2 (unmarked), L3 (0.6); at 0.125 FPI threshold 0.4
    per_lesion = metrics["per_lesion"]
    assert per_lesion["lesions"] == 3
    assert per_lesion["sensitivity_at_fpi"]["0.125"]["estimate"] == pytest.approx(2 / 3, abs=1e-4)
    # at 4 FPI every false mark is allowed, L2 is still never marked
    assert per_lesion["sensitivity_at_fpi"]["4"]["estimate"] == pytest.approx(2 / 3, abs=1e-4)
    # truth without detectability records (schema 1.0, converted datasets): no split, no error
    assert metrics["detectability"] is None


@pytest.mark.req("SRS-PHA-002", "SRS-PERF-001")
def test_truth_with_a_missing_key_or_a_wrong_type_is_one_error_naming_file_and_key(tmp_path: Path) -> None:
    truth, findings = _dataset()
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(truth))
    parsed = load_truth(path)
    assert isinstance(parsed, Truth) and parsed == parse_truth(truth, path)
    # optional keys absent (schema 1.0, converted datasets): they read as None
    lesion = parsed.exams[0].lesions[0]
    assert (parsed.schema_version, parsed.seed, lesion.views[0].detectability) == (None, None, None)
    assert analyse(parsed, findings, Criteria(), n_resamples=1000, seed=1).metrics["data"]["exams"] == 5

    missing, wrong = copy.deepcopy(truth), copy.deepcopy(truth)
    del missing["exams"][1]["lesions"][0]["diameter_mm"]
    wrong["exams"][0]["lesions"][0]["views"][1]["box"] = "100 100 200 200"
    for data, where, key in ((missing, "exams/1/lesions/0", "diameter_mm"),
                             (wrong, "exams/0/lesions/0/views/1/box", "box")):
        # the parser itself (truth given as data, and behind analyse)
        with pytest.raises(TruthError) as parse_error:
            parse_truth(data, path)
        message = str(parse_error.value)
        assert message.startswith(f"{path}: invalid at {where}") and key in message and len(message.splitlines()) == 1
        with pytest.raises(EvaluationInputError, match=key):
            analyse(data, findings, Criteria(), n_resamples=1000, seed=1)
        # the file, through the schema check then the parser
        path.write_text(json.dumps(data))
        with pytest.raises(EvaluationInputError) as file_error:
            load_truth(path)
        message = str(file_error.value)
        assert message.startswith(f"{path}: invalid at {where}") and key in message and len(message.splitlines()) == 1
    with pytest.raises(TruthError, match=r"exams/4/lesions/0/type: expected one of mass, calcification_cluster"):
        bad = copy.deepcopy(truth)
        bad["exams"][4]["lesions"][0]["type"] = "cyst"
        parse_truth(bad, path)
