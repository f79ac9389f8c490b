"""Batched inference: equal-shape views share a batch, and nothing depends on batch-mates (SRS-RT-006)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from cad.analysis.pipeline import analyse_studies, analyse_study
from cad.detect.inputs import ViewInput, prepare_view
from cad.detect.locked import load_locked_model
from cad.detect.postprocess import shape_batches
from cad.detect.runtime import make_runtime
from cad.io import load
from cad.result.findings_json import result_to_json


def _view(shape: tuple[int, int]) -> ViewInput:
    return ViewInput(np.zeros(shape, dtype=np.float32), None, (shape[1], shape[0]))  # type: ignore[arg-type]


@pytest.mark.req("SRS-RT-006")
def test_only_equal_shapes_share_a_batch_and_batches_are_capped() -> None:
    views = [_view((64, 96)), _view((96, 64)), _view((64, 96)), _view((64, 96)), _view((96, 64))]
    assert shape_batches(views, 4) == [[0, 2, 3], [1, 4]]
    assert shape_batches(views, 2) == [[0, 2], [3], [1, 4]]
    assert shape_batches(views, 1) == [[0], [2], [3], [1], [4]]
    with pytest.raises(ValueError, match="max_batch"):
        shape_batches(views, 0)


@pytest.mark.req("SRS-RT-006")
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_a_view_gives_the_same_detections_alone_and_in_a_batch(runtime: str, mass_phantom_dir: Path) -> None:
    model = load_locked_model()
    engine = make_runtime(model, runtime, max_batch=4)
    image = load([mass_phantom_dir]).images[0]
    view = prepare_view(image, model.config)
    (alone,) = engine.detect([view])
    batched = engine.detect([view, view, view])
    assert len(alone) > 0
    for result in batched:
        np.testing.assert_array_equal(result.scores, alone.scores)
        np.testing.assert_array_equal(result.boxes, alone.boxes)


def _relabelled_copy(source: Path, out: Path) -> Path:
    """The same images as another study: new Study, Series and SOP Instance UIDs."""
    out.mkdir()
    study, series = generate_uid(), generate_uid()
    for path in sorted(source.glob("**/*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(out / path.name, enforce_file_format=True)
    return out


@pytest.mark.req("SRS-RT-006")
def test_a_study_analysed_with_others_gets_the_findings_it_gets_alone(mass_phantom_dir: Path, tmp_path: Path) -> None:
    model = load_locked_model()
    engine = make_runtime(model, "onnxruntime")
    original = load([mass_phantom_dir]).studies[0]
    twin = load([_relabelled_copy(mass_phantom_dir, tmp_path / "twin")]).studies[0]
    alone, _ = analyse_study(original, model, engine)
    together = analyse_studies([original, twin], model, engine)
    assert result_to_json(together[0][0]) == result_to_json(alone)
    twin_alone, _ = analyse_study(twin, model, engine)
    assert result_to_json(together[1][0]) == result_to_json(twin_alone)
    scores = lambda f: [(x.score, [v.box for v in x.views]) for x in f.findings]  # noqa: E731
    assert scores(together[1][0]) == scores(alone)
