"""Exact forward/inverse coordinate transforms (SRS-GEO-002)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cad.preprocess.transform import CanonicalTransform


@st.composite
def transforms(draw: st.DrawFn) -> CanonicalTransform:
    width = draw(st.integers(64, 5000))
    height = draw(st.integers(64, 5000))
    x0 = draw(st.floats(0, width / 2))
    y0 = draw(st.floats(0, height / 2))
    x1 = draw(st.floats(x0 + 1, width))
    y1 = draw(st.floats(y0 + 1, height))
    out_w = draw(st.integers(1, 1200))
    out_h = draw(st.integers(1, 1200))
    return CanonicalTransform(
        width, height, draw(st.booleans()), draw(st.booleans()), (x0, y0, x1, y1), (out_w, out_h)
    )


coords = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@pytest.mark.req("SRS-GEO-002")
@settings(max_examples=300, deadline=None)
@given(transforms(), st.lists(st.tuples(coords, coords), min_size=1, max_size=20))
def test_points_round_trip_exactly(t: CanonicalTransform, points: list[tuple[float, float]]) -> None:
    p = np.array(points)
    np.testing.assert_allclose(t.backward_points(t.forward_points(p)), p, atol=1e-6)
    np.testing.assert_allclose(t.forward_points(t.backward_points(p)), p, atol=1e-6)


@pytest.mark.req("SRS-GEO-002")
@settings(max_examples=300, deadline=None)
@given(transforms(), st.lists(st.tuples(coords, coords, coords, coords), min_size=1, max_size=10))
def test_boxes_round_trip_and_stay_ordered(
    t: CanonicalTransform, raw: list[tuple[float, float, float, float]]
) -> None:
    b = np.array([[min(a, c), min(b_, d), max(a, c), max(b_, d)] for a, b_, c, d in raw])
    forward = t.forward_boxes(b)
    assert np.all(forward[:, 2] >= forward[:, 0]) and np.all(forward[:, 3] >= forward[:, 1])
    np.testing.assert_allclose(t.backward_boxes(forward), b, atol=1e-6)


@pytest.mark.req("SRS-GEO-002")
def test_flip_maps_pixel_edges_to_pixel_edges() -> None:
    t = CanonicalTransform(100, 50, True, False, (0.0, 0.0, 100.0, 50.0), (100, 50))
    # pixel column 0 covers [0, 1); after a horizontal flip it is column 99, [99, 100)
    np.testing.assert_allclose(t.forward_boxes([[0, 0, 1, 1]]), [[99, 0, 100, 1]])
    np.testing.assert_allclose(t.forward_points([[10.5, 3.5]]), [[89.5, 3.5]])


@pytest.mark.req("SRS-GEO-002")
@settings(max_examples=40, deadline=None)
@given(
    st.booleans(), st.booleans(), st.integers(0, 40), st.integers(0, 40),
    st.sampled_from([1, 2, 4]),
)
def test_resampled_image_agrees_with_point_transform(
    flip_x: bool, flip_y: bool, cx: int, cy: int, step: int
) -> None:
    """A bright pixel lands where the point transform says its centre goes."""
    width, height = 160, 120
    image = np.zeros((height, width), np.float32)
    px, py = 60 + cx, 30 + cy
    image[py : py + step, px : px + step] = 1.0
    crop = (8.0, 4.0, 8.0 + 128.0, 4.0 + 96.0)
    t = CanonicalTransform(width, height, flip_x, flip_y, crop, (128 // step, 96 // step))
    out = t.apply(image)
    centre = t.forward_points([[px + step / 2, py + step / 2]])[0]
    iy, ix = np.unravel_index(int(np.argmax(out)), out.shape)
    assert abs((ix + 0.5) - centre[0]) <= 0.5 and abs((iy + 0.5) - centre[1]) <= 0.5


@pytest.mark.req("SRS-GEO-002")
def test_rejects_empty_crop_and_wrong_image_size() -> None:
    with pytest.raises(ValueError, match="empty"):
        CanonicalTransform(10, 10, False, False, (5.0, 0.0, 5.0, 10.0), (5, 5))
    t = CanonicalTransform(10, 10, False, False, (0.0, 0.0, 10.0, 10.0), (5, 5))
    with pytest.raises(ValueError, match="expects 10 x 10"):
        t.apply(np.zeros((9, 10), np.float32))
