"""Power-law (1/f^beta) random fields: the standard statistical model of breast parenchyma."""

from __future__ import annotations

import numpy as np


def power_law_field(
    shape: tuple[int, ...], beta: float, rng: np.random.Generator, f_min: float = 1.0
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian field whose power spectrum falls as 1/f^beta.

    ``f_min`` (in cycles per field) caps the lowest frequencies so one mode cannot dominate.
    """
    freqs = np.meshgrid(
        *[np.fft.fftfreq(n) * n for n in shape[:-1]],
        np.fft.rfftfreq(shape[-1]) * shape[-1],
        indexing="ij",
    )
    f = np.sqrt(sum(fr.astype(np.float64) ** 2 for fr in freqs))
    amplitude = np.maximum(f, f_min) ** (-beta / 2.0)
    amplitude.flat[0] = 0.0
    spectrum = amplitude * (
        rng.standard_normal(amplitude.shape) + 1j * rng.standard_normal(amplitude.shape)
    )
    field = np.fft.irfftn(spectrum, s=shape, axes=tuple(range(len(shape))))
    field -= field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)
