"""Second-stage building blocks on constructed views: blobs, candidate merging, counterparts,
suppression, settings (SRS-DET-006). Expected values follow from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cad.detect.blobs import BlobConfig, find_blobs
from cad.detect.inputs import ViewInput
from cad.detect.linking import Candidate
from cad.detect.postprocess import ViewDetections
from cad.detect.rescore import (
    COUNTERPARTS,
    RescoreSettings,
    counterparts,
    geometric_cost,
    patches,
    sigmoid,
    suppress,
    view_candidates,
)
from cad.preprocess.transform import CanonicalTransform


def _view(array: np.ndarray) -> ViewInput:
    """A prepared view whose model input is ``array`` (identity transform: no geometry needed)."""
    h, w = array.shape
    transform = CanonicalTransform(w, h, False, False, (0.0, 0.0, float(w), float(h)), (w, h))

    class _Geometry:
        pass

    geometry = _Geometry()
    geometry.transform = transform  # type: ignore[attr-defined]
    return ViewInput(array.astype(np.float32), geometry, (w, h))  # type: ignore[arg-type]


def _blob_image(centres: list[tuple[float, float, float, float]], seed: int = 0) -> np.ndarray:
    """A 'breast' (whole image above background) with Gaussian blobs (x, y, sigma, amplitude)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:200, 0:240] + 0.5
    image = rng.normal(0.0, 0.05, (200, 240))
    for x, y, s, a in centres:
        image += a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
    image[:, :2] = -3.0  # a background margin so the breast region is defined
    return image


@pytest.mark.req("SRS-DET-006")
def test_blob_detector_finds_bright_blobs_strongest_first() -> None:
    image = _blob_image([(80.0, 60.0, 7.0, 2.0), (170.0, 140.0, 10.0, 1.0)])
    found = find_blobs(_view(image), BlobConfig(per_view=5))
    centres = (found.model_boxes[:, :2] + found.model_boxes[:, 2:]) / 2
    assert np.hypot(*(centres[0] - (80.0, 60.0))) <= 2.0
    assert np.hypot(*(centres[1] - (170.0, 140.0))) <= 2.0
    assert found.strength[0] > found.strength[1] > 0
    assert list(found.strength) == sorted(found.strength, reverse=True)
    # the box is the blob's diameter, 2 * sqrt(2) * sigma, around the centre
    side = found.model_boxes[0, 2] - found.model_boxes[0, 0]
    assert side == pytest.approx(2 * math.sqrt(2) * found.sigma[0])
    assert 5.0 <= found.sigma[0] <= 10.0
    # one blob is one candidate: no second peak within separation * sigma of the first
    distances = np.hypot(*(centres[1:] - centres[0]).T)
    assert (distances > 1.5 * found.sigma[0]).all()


@pytest.mark.req("SRS-DET-006")
def test_blobs_covered_by_a_detection_are_not_added_twice() -> None:
    image = _blob_image([(80.0, 60.0, 7.0, 2.0), (170.0, 140.0, 10.0, 1.0)])
    view = _view(image)
    # a detection centred on the first blob, whose box also holds the second blob's centre? no:
    # a second, larger detection box covers the second blob without being centred on it
    boxes = np.array([[70.0, 50.0, 90.0, 70.0], [150.0, 100.0, 230.0, 160.0]])
    detections = ViewDetections(boxes, boxes, np.array([0.8, 0.3]))
    found = view_candidates(view, detections, BlobConfig(per_view=2))
    assert len(found) == 3  # two detections, the first blob dropped, the second kept
    assert found.from_blob.tolist() == [False, False, True]
    blob_centre = (found.model_boxes[2, :2] + found.model_boxes[2, 2:]) / 2
    assert np.hypot(*(blob_centre - (170.0, 140.0))) <= 2.0
    assert found.detector_score.tolist() == [0.8, 0.3, 0.3]  # the blob takes the covering detection's score
    np.testing.assert_allclose(found.boxes, found.model_boxes)  # identity transform
    assert found.blob_strength[0] > found.blob_strength[1]


@pytest.mark.req("SRS-DET-006")
def test_patches_are_centred_and_scaled_to_the_box() -> None:
    image = _blob_image([(80.0, 60.0, 6.0, 2.0)])
    view = _view(image)
    out = patches(view, np.array([[70.0, 50.0, 90.0, 70.0]]))
    assert out.shape == (1, 2, 48, 48) and out.dtype == np.float32
    box, context = out[0]
    # the box channel spans two box sides (40 px) over 48 pixels: the blob fills its middle
    peak = np.unravel_index(np.argmax(box), box.shape)
    assert abs(peak[0] - 23.5) <= 1.5 and abs(peak[1] - 23.5) <= 1.5
    # the context channel spans 160 px: the same blob is 4x smaller there
    assert (context > 1.0).sum() < (box > 1.0).sum()


def _candidate(index: int, nipple: float, depth: float | None, size: float, score: float = 0.5) -> Candidate:
    return Candidate(index, score, nipple, depth, size, 0.0)


@pytest.mark.req("SRS-DET-006")
def test_counterparts_are_the_best_geometric_matches_in_the_other_view() -> None:
    cc = [_candidate(0, 50.0, 30.0, 12.0), _candidate(1, 90.0, 60.0, 8.0)]
    mlo = [_candidate(0, 88.0, 55.0, 8.0), _candidate(1, 52.0, 31.0, 12.0), _candidate(2, 200.0, None, 30.0)]
    pairs = counterparts(cc, mlo, k=2)
    # rows: CC 0, CC 1, MLO 0, MLO 1, MLO 2; counterpart indices into the same rows
    assert pairs.index[0].tolist() == [3, 2]  # CC 0 best matches MLO 1 (row 3), then MLO 0 (row 2)
    assert pairs.index[1].tolist() == [2, 3]
    assert pairs.index[2].tolist() == [1, 0]  # MLO 0 best matches CC 1
    assert (pairs.mask == 1).all()
    by_hand = ((50 - 52) / 12) ** 2 + ((30 - 31) / 40) ** 2 + (math.log(12 / 12) / 0.35) ** 2
    assert geometric_cost(cc[0], mlo[1]) == pytest.approx(by_hand)
    # a depth missing in one view leaves the depth term out and says so
    assert pairs.features[4, 0, 2] == 1.0 and pairs.features[4, 0, 1] == 0.0
    alone = counterparts(cc, [])
    assert alone.index.shape == (2, COUNTERPARTS) and (alone.mask == 0).all()


@pytest.mark.req("SRS-DET-006")
def test_suppression_keeps_the_best_of_overlapping_boxes_and_adjacent_masses() -> None:
    boxes = np.array([
        [0, 0, 10, 10],  # 0.9
        [1, 1, 11, 11],  # 0.8, IoU 0.68 with the first: suppressed
        [10, 0, 20, 10],  # 0.7, adjacent (touching) box: IoU 0, kept
        [30, 30, 40, 40],  # 0.6
    ], dtype=float)
    kept = suppress(boxes, np.array([0.9, 0.8, 0.7, 0.6]), iou=0.3, limit=10)
    assert kept.tolist() == [0, 2, 3]
    assert suppress(boxes, np.array([0.9, 0.8, 0.7, 0.6]), iou=0.3, limit=2).tolist() == [0, 2]
    # ties are broken by position, so the result never depends on input order
    assert suppress(boxes[[3, 2]], np.array([0.5, 0.5]), 0.3, 10).tolist() == [1, 0]


@pytest.mark.req("SRS-DET-006", "SRS-LNK-002")
def test_settings_round_trip_and_fusion_rules() -> None:
    settings = RescoreSettings(fusion="noisy_or", nms_iou=0.25)
    again = RescoreSettings.from_dict(settings.to_dict())
    assert again == settings
    assert settings.combine(0.5, 0.5) == pytest.approx(0.75)
    assert RescoreSettings(fusion="max").combine(0.2, 0.7) == 0.7
    assert RescoreSettings(fusion="mean").combine(0.2, 0.6) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="fusion"):
        RescoreSettings(fusion="product")
    with pytest.raises(ValueError, match="unknown rescorer settings"):
        RescoreSettings.from_dict({"nms": 0.3})
    assert sigmoid(np.array([0.0, 800.0, -800.0])).tolist() == [0.5, 1.0, 0.0]
