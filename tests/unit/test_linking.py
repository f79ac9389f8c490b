"""CC/MLO linking and score fusion on constructed detections."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cad.detect.linking import Candidate, LinkingConfig, fuse, link, pair_cost


def cand(index: int, nipple: float, depth: float | None = 40.0, size: float = 12.0,
         contrast: float = 1.0, score: float = 0.8) -> Candidate:
    return Candidate(index, score, nipple, depth, size, contrast)


@pytest.mark.req("SRS-LNK-001")
def test_consistent_pair_links_and_inconsistent_pairs_do_not() -> None:
    config = LinkingConfig()
    assert [(l.cc, l.mlo) for l in link([cand(0, 50)], [cand(0, 53, 45)], config)] == [(0, 0)]
    assert link([cand(0, 50)], [cand(0, 110)], config) == []  # 60 mm apart from the nipple
    assert link([cand(0, 50, depth=10)], [cand(0, 50, depth=140)], config) == []  # depth differs
    assert link([cand(0, 50, size=6)], [cand(0, 50, size=30)], config) == []  # 5x the size
    assert link([cand(0, 50, score=0.01)], [cand(0, 50)], config) == []  # below the score floor


@pytest.mark.req("SRS-LNK-001")
def test_missing_pectoral_line_falls_back_to_other_cues() -> None:
    links = link([cand(0, 50)], [cand(0, 52, depth=None)], LinkingConfig())
    assert [(l.cc, l.mlo) for l in links] == [(0, 0)]


@pytest.mark.req("SRS-LNK-001")
def test_assignment_is_one_to_one_and_minimal() -> None:
    config = LinkingConfig()
    cc = [cand(0, 40, 30, 10), cand(1, 70, 60, 20), cand(2, 100, 90, 15)]
    mlo = [cand(0, 102, 88, 15), cand(1, 42, 31, 11), cand(2, 69, 62, 19)]
    links = link(cc, mlo, config)
    assert [(l.cc, l.mlo) for l in links] == [(0, 1), (1, 2), (2, 0)]
    best = min(
        sum(pair_cost(cc[i], mlo[j], config) for i, j in enumerate(perm))
        for perm in itertools.permutations(range(3))
    )
    assert sum(l.cost for l in links) == pytest.approx(best)


@pytest.mark.req("SRS-LNK-002")
@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_fusion_is_bounded_and_never_below_the_best_view(a: float, b: float, c: float) -> None:
    fused = fuse(a, b, c)
    assert max(a, b) - 1e-12 <= fused <= 1.0 + 1e-12


@pytest.mark.req("SRS-LNK-002")
def test_fusion_extremes() -> None:
    assert fuse(0.6, 0.5, 0.0) == pytest.approx(0.6)
    assert fuse(0.6, 0.5, 1.0) == pytest.approx(1 - 0.4 * 0.5)
    assert np.isclose(fuse(0.5, 0.6, 0.7), fuse(0.6, 0.5, 0.7))


@pytest.mark.req("SRS-LNK-001")
def test_a_true_pair_is_not_traded_for_two_mediocre_ones() -> None:
    """A forced maximum-cardinality assignment would pair cc0-mlo1 and cc1-mlo0 (each 27 mm off
    in nipple distance); leaving both weak partners unlinked keeps the consistent pair."""
    config = LinkingConfig()
    cc = [cand(0, 100, 90, 10, 0.5, 0.8), cand(1, 75, 88, 10, 0.5, 0.6)]
    mlo = [cand(0, 102, 88, 10, 0.5, 0.6), cand(1, 127, 90, 10, 0.5, 0.8)]
    true_pair = pair_cost(cc[0], mlo[0], config)
    crossed = pair_cost(cc[0], mlo[1], config) + pair_cost(cc[1], mlo[0], config)
    assert crossed < config.gate * 2 and pair_cost(cc[1], mlo[1], config) > config.gate
    assert true_pair + config.gate < crossed  # keeping the true pair is cheaper overall
    assert [(l.cc, l.mlo) for l in link(cc, mlo, config)] == [(0, 0)]


@pytest.mark.req("SRS-LNK-001")
def test_score_consistency_term() -> None:
    sure, faint = cand(0, 50, score=0.9), cand(0, 50, score=0.06)
    with_term = LinkingConfig()
    without = LinkingConfig(score_sd_logit=0.0)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    expected = ((logit(0.9) - logit(0.06)) / with_term.score_sd_logit) ** 2
    assert pair_cost(sure, faint, with_term) - pair_cost(sure, faint, without) == pytest.approx(expected)
    assert pair_cost(sure, cand(0, 50, score=0.9), with_term) == pytest.approx(0.0)
