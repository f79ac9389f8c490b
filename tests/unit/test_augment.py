"""Patch sampling and augmentation keep boxes on their lesions and the chest wall on the left."""

from __future__ import annotations

import numpy as np
import pytest

from cad_tools.training.prepare import PreparedImage
from cad_tools.training.sampler import AugmentConfig, PatchSampler


def _image() -> PreparedImage:
    array = np.full((400, 300), -2.0, dtype=np.float32)
    array[:, :200] = 0.0  # breast on the left (chest wall at x = 0)
    yy, xx = np.mgrid[:400, :300]
    array[((xx - 120) / 14) ** 2 + ((yy - 210) / 9) ** 2 <= 1] = 4.0  # an oval mass
    boxes = np.array([[106, 201, 134, 219]], dtype=np.float32)
    return PreparedImage(array.astype(np.float16), boxes, np.zeros((0, 4), np.float32), "test", "t")


@pytest.mark.req("SRS-TRN-002")
def test_boxes_follow_the_mass_through_rotation_and_scale() -> None:
    augment = AugmentConfig(max_noise_sd=0.0, contrast_range=(1, 1), brightness=0.0)
    sampler = PatchSampler([_image()], 128, 1.0, augment, np.random.default_rng(0))
    for _ in range(30):
        patch, target = sampler.sample()
        bright = patch[0].numpy() > 2.0
        if len(target["boxes"]) == 0:
            continue
        ys, xs = np.nonzero(bright)
        x0, y0, x1, y1 = target["boxes"][0].tolist()
        assert x0 - 1 <= xs.mean() <= x1 + 1 and y0 - 1 <= ys.mean() <= y1 + 1
        # the box is tight: the mass fills its centre and the box is not much larger than it
        assert (x1 - x0) * (y1 - y0) <= 1.6 * bright.sum() * 4 / np.pi


@pytest.mark.req("SRS-TRN-002")
def test_no_flip_chest_wall_stays_left() -> None:
    sampler = PatchSampler([_image()], 128, 0.0, AugmentConfig(max_noise_sd=0.0), np.random.default_rng(1))
    sampler.positives = []
    image = sampler.images[0]
    for _ in range(20):
        # patches centred on the skin line: breast must stay on the left half
        sampler._centre = lambda: (0, np.array([200.0, 200.0]))  # type: ignore[method-assign]
        patch, _ = sampler.sample()
        left, right = patch[0, :, :48].mean(), patch[0, :, 80:].mean()
        assert left > right + 1.0
    assert image.array.shape == (400, 300)
