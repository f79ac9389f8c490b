"""The one-pass hole filling equals scipy's binary_fill_holes (SRS-GEO-001)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from cad.preprocess.mask import fill_holes


@pytest.mark.req("SRS-GEO-001")
@settings(max_examples=400, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_fill_holes_equals_scipy(mask: np.ndarray) -> None:
    assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


@pytest.mark.req("SRS-GEO-001")
def test_fill_holes_fills_a_ring_and_keeps_a_notch() -> None:
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False  # a hole
    ring[2, 4] = False  # a notch open to the outside: not a hole
    filled = fill_holes(ring)
    assert filled[4, 4] and not filled[2, 4] and filled.sum() == ring.sum() + 1
