"""A locked model with a learned correspondence, end to end on a phantom exam (SRS-LNK-004):
links carry their probability above the minimum, every score takes the other view's evidence by
the manifest's rule, and the settings hash covers the correspondence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cad.analysis.pipeline import analyse_study
from cad.detect.correspondence import FEATURES, CorrespondenceModel
from cad.detect.locked import MANIFEST_FILE, load_locked_model
from cad.detect.manifest import CORRESPONDENCE_KEY
from cad.detect.runtime import make_runtime
from cad.io import load


def _with_correspondence(tmp_path: Path, model: CorrespondenceModel) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(load_locked_model().path, folder, ignore=shutil.ignore_patterns("*int8*"))
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest[CORRESPONDENCE_KEY] = model.to_dict()
    manifest["runtimes"].pop("onnxruntime-int8", None)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


@pytest.mark.req("SRS-LNK-004")
def test_links_carry_their_probability_and_scores_take_the_other_view(mass_phantom_dir: Path, tmp_path: Path) -> None:
    n = len(FEATURES)
    weights = [0.0] * n
    weights[FEATURES.index("nipple_diff_mm")] = -2.0  # nearer in nipple distance: more likely one lesion
    weights[FEATURES.index("logit_min")] = 1.0
    rule = CorrespondenceModel(((tuple((w,) for w in weights), (0.0,)),), (0.0,) * n, (10.0,) * n, 0.3, 0.1, 20,
                               (0.0, 1.0, 0.5))
    folder = _with_correspondence(tmp_path, rule)
    released = load_locked_model()
    model = load_locked_model(folder)
    assert model.manifest.correspondence == rule and model.settings_sha256 != released.settings_sha256
    (study,) = load([mass_phantom_dir]).studies
    result, views = analyse_study(study, model, make_runtime(model))
    linked = [f for f in result.findings if f.linked]
    assert linked and all(f.link_probability is not None and f.link_probability >= 0.3 for f in linked)
    assert all(f.link_cost is None for f in linked)
    for finding in result.findings:
        if finding.linked:
            continue
        (view,) = finding.views
        # both breasts have both views analysed: a single-view finding's score is the rule over its
        # own score and its best counterpart (never above what a perfect counterpart would give)
        assert finding.score <= rule.dual_score(view.score, 1.0) + 1e-6
        assert finding.score >= rule.dual_score(view.score, 0.0) - 1e-6
    # a detection's own view score is unchanged: the dual-view evidence is in the finding's score
    own = {(v.image.sop_instance_uid, tuple(np.round(v.detections.boxes[k], 2))): float(v.detections.scores[k])
           for v in views for k in range(len(v.detections))}
    for finding in result.findings:
        for view in finding.views:
            assert own[(view.sop_instance_uid, tuple(np.round(view.box, 2)))] == pytest.approx(view.score, abs=1e-6)
