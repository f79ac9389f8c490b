"""FROC scoring rules on constructed marks (values worked out by hand)."""

from __future__ import annotations

import pytest

from verification.froc import ScoredMark, TruthLesion, localises, score_marks


@pytest.mark.req("SRS-PERF-001")
def test_scoring_rules() -> None:
    lesions = [TruthLesion("L1", "a", [10, 10, 30, 30]), TruthLesion("C1", "a", [60, 60, 70, 70], included=False)]
    marks = [
        ScoredMark("a", [12, 12, 26, 26], 0.7),  # true positive for L1
        ScoredMark("a", [15, 15, 25, 25], 0.95),  # a second mark on L1: rates the lesion, no FP
        ScoredMark("b", [0, 0, 5, 5], 0.8),  # false positive on a lesion-free image
        ScoredMark("a", [61, 61, 69, 69], 0.99),  # on an excluded lesion: ignored
    ]
    result = score_marks(marks, lesions, ["a", "b"])
    assert result.n_lesions == 1 and result.n_images == 2
    assert list(result.lesion_scores) == [0.95]
    assert list(result.fp_scores) == [0.8]
    assert result.sensitivity_at(0.0) == 1.0  # threshold 0.95: lesion found, no FP
    result2 = score_marks(marks[:1] + marks[2:], lesions, ["a", "b"])
    assert result2.sensitivity_at(0.25) == 0.0  # the FP at 0.8 outranks the lesion at 0.7
    assert result2.sensitivity_at(0.5) == 1.0
    assert result2.threshold_at(0.5) == 0.7


@pytest.mark.req("SRS-PERF-001")
def test_localisation_criteria() -> None:
    assert localises([0, 0, 10, 10], [4, 4, 20, 20])  # centre (5, 5) inside
    assert not localises([0, 0, 6, 6], [4, 4, 20, 20])  # centre (3, 3) outside
    assert localises([4, 4, 20, 20], [4, 4, 20, 22], iou_threshold=0.8)
    assert not localises([0, 0, 10, 10], [4, 4, 20, 20], iou_threshold=0.3)
