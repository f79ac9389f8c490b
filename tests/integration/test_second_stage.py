"""A two-stage model (the released first stage with a seeded second stage; the released model has
none): second stage locked with the weights, ONNX parity, how its scores reach findings.json,
marks inside the breast on real anatomy (SRS-DET-006)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cad.analysis.pipeline import analyse_study, detect_views, rescore_breast
from cad.detect.locked import (
    MANIFEST_FILE,
    RESCORER_KEY,
    WEIGHTS_FILE,
    ModelIntegrityError,
    load_locked_model,
    sha256_file,
)
from cad.detect.runtime import OnnxRuntime
from cad.io import load
from cad.io.image import Laterality, MammogramImage
from cad.result.findings_json import result_to_dict
from cad_torch.network import locked_rescorer
from cad_torch.runtime import TorchRuntime

LOGIT = 1e-4


@pytest.fixture(scope="module")
def model(two_stage_model_dir: Path):  # type: ignore[no-untyped-def]
    locked = load_locked_model(two_stage_model_dir)
    assert locked_rescorer(locked) is not None
    return locked


@pytest.mark.req("SRS-DET-006", "SRS-RT-003")
def test_second_stage_onnx_gives_the_pytorch_logits(model, mass_phantom_dir: Path) -> None:  # type: ignore[no-untyped-def]
    images = load([mass_phantom_dir]).images
    views, _ = detect_views(model, images, TorchRuntime(model, max_batch=1))
    onnx_runtime, torch_runtime = OnnxRuntime(model), TorchRuntime(model)
    checked = 0
    for laterality in (Laterality.RIGHT, Laterality.LEFT):
        breast = [v for v in views if v.image.laterality is laterality]
        inputs = rescore_breast(breast, model, torch_runtime).inputs
        a_single, a_dual = torch_runtime.rescore(inputs)
        b_single, b_dual = onnx_runtime.rescore(inputs)
        assert np.abs(a_single - b_single).max() <= LOGIT and np.abs(a_dual - b_dual).max() <= LOGIT
        checked += len(inputs)
    assert checked > 20  # both breasts have candidates of both sources


@pytest.mark.req("SRS-DET-006", "SRS-DET-004")
def test_findings_agree_across_runtimes_and_runs(model, mass_phantom_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (study,) = load([mass_phantom_dir]).studies
    first, _ = analyse_study(study, model, OnnxRuntime(model))
    again, _ = analyse_study(study, model, OnnxRuntime(model))
    reference, _ = analyse_study(study, model, TorchRuntime(model))
    assert result_to_dict(first) == result_to_dict(again)
    a, b = result_to_dict(first)["findings"], result_to_dict(reference)["findings"]
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b):
        assert [v["box"] for v in x["views"]] == [v["box"] for v in y["views"]]
        assert abs(x["score"] - y["score"]) <= 1e-5


@pytest.mark.req("SRS-DET-006", "SRS-LNK-002")
def test_view_scores_are_single_view_and_finding_scores_dual_view(model, mass_phantom_dir: Path) -> None:  # type: ignore[no-untyped-def]
    (study,) = load([mass_phantom_dir]).studies
    findings, views = analyse_study(study, model, TorchRuntime(model, max_batch=1))
    settings = model.rescore_settings
    expected: dict[tuple[str, tuple[float, ...]], tuple[float, float]] = {}
    for laterality in (Laterality.RIGHT, Laterality.LEFT):
        breast = [v for v in views if v.image.laterality is laterality]
        rescored = rescore_breast(breast, model, TorchRuntime(model, max_batch=1))
        inputs = rescored.inputs
        for row in rescored.rows:
            position = int(inputs.view_of[row])
            first = int(np.searchsorted(inputs.view_of, position))
            uid = breast[inputs.views[position]].image.sop_instance_uid
            box = tuple(float(c) for c in inputs.found[position].boxes[row - first])
            expected[(uid, box)] = (float(rescored.single[row]), float(rescored.dual[row]))
    linked = 0
    for finding in findings.findings:
        duals = []
        for view in finding.views:
            single, dual = expected[(view.sop_instance_uid, view.box)]
            assert view.score == pytest.approx(single, abs=1e-6)
            duals.append(dual)
        combined = settings.combine(*duals) if len(duals) == 2 else duals[0]
        assert finding.score == pytest.approx(combined, abs=1e-6)
        linked += len(duals) == 2
    assert linked >= 1


@pytest.mark.req("SRS-DET-006", "SRS-MOD-001")
def test_a_changed_second_stage_is_refused(tmp_path: Path, two_stage_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(two_stage_model_dir, folder)
    tensors = load_file(folder / WEIGHTS_FILE)
    name = next(k for k in sorted(tensors) if k.startswith("rescorer.") and tensors[k].is_floating_point())
    tensors[name] = tensors[name] + torch.ones_like(tensors[name])
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"name": "tampered", "dtype": "float16"})
    with pytest.raises(ModelIntegrityError, match="weights do not match the manifest"):
        load_locked_model(folder)
    # re-hashing the tampered file does not help when the manifest no longer describes it
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["weights"]["sha256"] = sha256_file(folder / WEIGHTS_FILE)
    del manifest[RESCORER_KEY]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with pytest.raises(ModelIntegrityError, match="second stage that the manifest does not describe"):
        load_locked_model(folder)


@pytest.mark.req("SRS-DET-006", "SRS-DET-003")
def test_second_stage_marks_on_real_mammograms_lie_inside_the_breast(  # type: ignore[no-untyped-def]
    model, real_mammograms: dict[str, MammogramImage]
) -> None:
    images = list(real_mammograms.values())
    views, refused = detect_views(model, images, TorchRuntime(model, max_batch=1))
    assert refused == [] and len(views) == 4
    for view in views:
        rescored = rescore_breast([view], model, TorchRuntime(model, max_batch=1))
        (found,) = rescored.inputs.found
        assert rescored.rows and found.from_blob.any()  # blobs are candidates too
        mask = view.view_input.geometry.mask
        for row in rescored.rows:
            box = found.boxes[row]
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            assert mask.contains(cx, cy), f"{view.image.path.name}: candidate at ({cx:.0f}, {cy:.0f}) outside the breast"
