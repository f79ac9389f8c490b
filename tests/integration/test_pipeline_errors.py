"""How the pipeline records an image it cannot analyse: an input condition by its reason, a
defect as an internal error with its traceback (SRS-DET-007)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

import cad.analysis.pipeline as pipeline
from cad.detect.locked import load_locked_model
from cad.io import load
from cad.io.image import MammogramImage
from cad.result.model import NOT_ANALYZED
from cad_torch.runtime import TorchRuntime


@pytest.mark.req("SRS-DET-007", "SRS-OUT-002")
def test_a_blank_image_has_no_breast_and_a_defect_is_an_internal_error(
    mass_phantom_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = load_locked_model()
    images = load([mass_phantom_dir]).images
    blank = dataclasses.replace(images[0], pixels=np.zeros_like(images[0].pixels))
    broken_uid = images[1].sop_instance_uid
    prepare = pipeline.prepare_view

    def prepare_with_a_defect(image: MammogramImage, config):  # type: ignore[no-untyped-def]
        if image.sop_instance_uid == broken_uid:  # a defect injected for one image
            raise IndexError("index 7 is out of bounds")
        return prepare(image, config)

    monkeypatch.setattr(pipeline, "prepare_view", prepare_with_a_defect)
    with caplog.at_level(logging.ERROR, logger="cad"):
        analysed, refused = pipeline.detect_views(model, [blank, *images[1:]], TorchRuntime(model, max_batch=1))
    reasons = {status.sop_instance_uid: status.reason for status in refused}
    assert all(status.status == NOT_ANALYZED for status in refused)
    assert reasons[blank.sop_instance_uid].startswith("breast region could not be found")
    assert reasons[broken_uid].startswith("internal error (IndexError)")
    assert "breast" not in reasons[broken_uid]
    assert "Traceback" in caplog.text and "index 7 is out of bounds" in caplog.text
    assert len(analysed) == 2  # the study's other two images are analysed
