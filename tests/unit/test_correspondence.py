"""The learned CC/MLO correspondence on constructed cases (SRS-LNK-004)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cad.detect.correspondence import FEATURES, CorrespondenceModel, ViewCandidate, assign, pair_features
from cad.detect.linking import Candidate


def _model(min_probability: float = 0.5, dual_view: tuple[float, float, float] | None = None) -> CorrespondenceModel:
    n = len(FEATURES)
    layer = (((0.0,),) * n, (0.0,))  # one input-by-one-output weight per feature, and a bias
    return CorrespondenceModel((layer,), (0.0,) * n, (1.0,) * n, min_probability, dual_view=dual_view)


def _candidate(index: int, score: float, nipple: float, size: float, depth: float | None = 30.0) -> ViewCandidate:
    return ViewCandidate(Candidate(index, score, nipple, depth, size, 0.2), index, np.array([0.0, 0.0, 10.0, 10.0]),
                         80.0, 0.1)


@pytest.mark.req("SRS-LNK-004")
def test_the_assignment_is_one_to_one_maximises_log_odds_and_never_links_below_the_minimum() -> None:
    p = np.array([[0.90, 0.80, 0.10],
                  [0.85, 0.20, 0.05]])
    # (0,0) alone gains logit(0.9); (0,1) + (1,0) gain logit(0.8) + logit(0.85), more
    assert assign(p, _model(0.5)) == [(0, 1), (1, 0)]
    # at 0.82 only (0,0) and (1,0) are allowed, and both want column 0: the more probable wins
    assert assign(p, _model(0.82)) == [(0, 0)]
    assert assign(np.full((2, 2), 0.4), _model(0.5)) == [], "nothing below the minimum probability links"
    assert assign(np.zeros((0, 3)), _model()) == []
    links = assign(np.random.default_rng(1).uniform(size=(6, 5)), _model(0.3))
    assert len({i for i, _ in links}) == len(links) == len({j for _, j in links}), "one to one"


@pytest.mark.req("SRS-LNK-004")
def test_pair_features_of_one_lesion_seen_twice_show_no_difference() -> None:
    same = pair_features(_candidate(0, 0.8, 50.0, 12.0), _candidate(0, 0.8, 50.0, 12.0))
    values = dict(zip(FEATURES, same))
    assert len(same) == len(FEATURES)
    for name in ("nipple_diff_mm", "nipple_rel_diff", "depth_diff_mm", "depth_rel_diff", "log_size_ratio",
                 "contrast_diff", "texture_diff", "logit_diff"):
        assert values[name] == pytest.approx(0.0), name
    assert values["depth_known"] == 1.0 and values["logit_min"] == values["logit_max"] == pytest.approx(math.log(4))
    apart = dict(zip(FEATURES, pair_features(_candidate(0, 0.8, 50.0, 12.0), _candidate(0, 0.3, 80.0, 24.0, None))))
    assert apart["nipple_diff_mm"] == pytest.approx(30.0) and apart["log_size_ratio"] == pytest.approx(math.log(2))
    assert apart["depth_known"] == 0.0 and apart["depth_diff_mm"] == 0.0


@pytest.mark.req("SRS-LNK-004")
def test_the_dual_view_score_rises_with_the_counterpart_and_is_the_own_score_without_a_rule() -> None:
    assert _model().dual_score(0.42, 0.9) == 0.42
    rule = _model(dual_view=(0.5, 1.0, 0.4))
    scores = [rule.dual_score(0.3, q) for q in (0.0, 0.2, 0.5, 0.9, 0.99)]
    assert scores == sorted(scores) and all(0.0 < s < 1.0 for s in scores)
    assert rule.dual_score(0.6, 0.5) > rule.dual_score(0.3, 0.5), "and with the detection's own score"


@pytest.mark.req("SRS-LNK-004")
def test_a_manifest_with_other_features_or_unknown_keys_is_refused() -> None:
    model = _model(0.3, (0.1, 1.0, 0.3))
    data = model.to_dict()
    assert CorrespondenceModel.from_dict(data) == model
    with pytest.raises(ValueError, match="not this software's"):
        CorrespondenceModel.from_dict({**data, "features": list(reversed(FEATURES))})
    with pytest.raises(ValueError, match="unknown correspondence settings: min_probabilty"):
        CorrespondenceModel.from_dict({**data, "min_probabilty": 0.5})
    with pytest.raises(ValueError, match="min_probability"):
        CorrespondenceModel.from_dict({**data, "min_probability": 1.5})


@pytest.mark.req("SRS-LNK-004")
def test_a_perceptron_correspondence_is_its_layers_and_refuses_a_wrong_shape() -> None:
    n = len(FEATURES)
    hidden = (tuple((1.0, -1.0) for _ in range(n)), (0.0, 0.5))
    out = (((2.0,), (-3.0,)), (0.1,))
    model = CorrespondenceModel((hidden, out), (0.0,) * n, (1.0,) * n, 0.5)
    x = np.linspace(-1, 1, n)[None, :]
    h = np.maximum(x @ np.array(hidden[0]) + np.array(hidden[1]), 0.0)
    expected = 1.0 / (1.0 + np.exp(-(h @ np.array(out[0]) + 0.1)))
    assert model.probabilities(x) == pytest.approx(expected[:, 0])
    assert CorrespondenceModel.from_dict(model.to_dict()) == model
    with pytest.raises(ValueError, match="layer 1 does not take 2 inputs"):
        CorrespondenceModel((hidden, (((1.0,),), (0.0,))), (0.0,) * n, (1.0,) * n, 0.5)
