"""How findable each lesion view is, from its exact signal, at the detector's input scale.

The phantom renders every lesion's expected signal apart from the anatomy and the noise
(:class:`~cad_tools.phantom.render.LesionSignal`), so the lesion-free twin of a view is known
without a second rendering. Both go through the display processing a site's ingest applies
(Modality LUT, window, scaling to [0, 1]) and the detector's own input preparation (breast
geometry, canonical orientation, crop, resampling to 0.4 mm, normalisation over the breast),
and the measures below are taken on the detector's input.

Definition (kept fixed so that it is comparable across releases; docs/phantom.md):

* ``snr``: the lesion signal's peak over the standard deviation of the view in an annulus
  around the lesion (1.25 to 2.5 times half the larger side of its box, inside the breast,
  outside every lesion box);
* three matched filters, each the view (normalised; outside the breast, the nearest breast
  pixel's value, and mirrored beyond the image edges, so that no artificial edge responds)
  correlated with the lesion's own signal template: ``raw`` (the template as it is),
  ``zero_mean`` (the template minus its mean over a window padded by half its size on each
  side: a centre-surround filter) and ``prewhitened`` (the raw template divided, in the
  frequency domain, by the view's own noise power spectrum: the lesion-free view's radially
  averaged Welch estimate over 64-pixel tiles inside the breast);
* for each filter, the lesion's response is the largest filtered value inside its box, and its
  ``rank`` is one plus the number of local maxima of the filtered view (maximum over a window
  the size of the box's geometric-mean side) that lie inside the breast, outside every lesion
  box, and exceed that response;
* ``visible``: for at least one filter, rank <= 2 (at most one local maximum outranks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage, signal

from cad.detect.config import DetectorConfig
from cad.io.dicom_reader import to_display
from cad.io.image import MammogramImage
from cad.preprocess.geometry import compute_geometry
from cad.preprocess.transform import CanonicalTransform
from cad_tools.phantom.render import LesionSignal

#: version of the definition above, recorded in truth.json beside the measures
DEFINITION_VERSION = "1.0"
FORMS = ("raw", "zero_mean", "prewhitened")
#: a lesion view is visible when, for some filter, at most this many maxima outrank it
MAX_OUTRANKING = 1
ANNULUS = (1.25, 2.5)
NPS_TILE = 64


@dataclass(frozen=True)
class Detectability:
    """The measures of one lesion view (see the module docstring)."""

    snr: float
    ranks: dict[str, int]

    @property
    def visible(self) -> bool:
        return min(self.ranks.values()) <= MAX_OUTRANKING + 1

    def to_dict(self) -> dict[str, object]:
        return {
            "definition": DEFINITION_VERSION,
            "snr": round(self.snr, 3),
            "rank": {form: int(self.ranks[form]) for form in FORMS},
            "visible": self.visible,
        }


@dataclass(frozen=True)
class _InputSpace:
    """The detector's input preparation of one view, reusable for other images of that view."""

    transform: CanonicalTransform
    breast: np.ndarray  # bool, model-input pixels
    mean: float
    std: float
    clip: float

    @classmethod
    def of(cls, image: MammogramImage, breast_mask: np.ndarray, config: DetectorConfig) -> _InputSpace:
        """The geometry and normalisation :func:`cad.detect.inputs.prepare_view` applies;
        ``breast_mask`` is the phantom's exact breast (original pixels), the region searched."""
        geometry = compute_geometry(image, config.target_mm, config.geometry_mm)
        canonical = geometry.transform.apply(image.pixels)
        above = canonical > geometry.mask.threshold
        values = canonical[above] if above.sum() >= 64 else canonical.ravel()
        breast = geometry.transform.apply(breast_mask.astype(np.float32)) > 0.5
        return cls(geometry.transform, breast, float(values.mean()), float(values.std()) or 1.0, config.clip)

    def image(self, display: np.ndarray) -> np.ndarray:
        """A display-space image as the detector's normalised input."""
        canonical = self.transform.apply(display).astype(np.float64)
        return np.clip((canonical - self.mean) / self.std, -self.clip, self.clip)

    def signal(self, display_signal: np.ndarray) -> np.ndarray:
        """A display-space difference (a lesion's signal) in normalised input units."""
        return self.transform.apply(display_signal).astype(np.float64) / self.std


def noise_power_spectrum(view: np.ndarray, breast: np.ndarray, tile: int = NPS_TILE) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged NPS (radial frequency in cycles/pixel, power) of ``view`` inside
    ``breast``: Welch estimate over non-overlapping, mean-removed, Hann-windowed tiles lying
    wholly inside the breast. Falls back to white noise where no tile fits."""
    rows, cols = view.shape
    window = np.outer(np.hanning(tile), np.hanning(tile))
    norm = float((window**2).sum())
    inside = ndimage.uniform_filter(breast.astype(np.float32), tile) > 0.999
    spectra = []
    for r in range(0, rows - tile + 1, tile // 2):
        for c in range(0, cols - tile + 1, tile // 2):
            if not inside[r + tile // 2, c + tile // 2]:
                continue
            block = view[r:r + tile, c:c + tile]
            block = block - block.mean()
            spectra.append(np.abs(np.fft.fft2(block * window)) ** 2 / norm)
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(tile), np.fft.fftfreq(tile), indexing="ij"))
    bins = np.linspace(0, np.sqrt(0.5), tile // 2 + 1)
    centres = 0.5 * (bins[:-1] + bins[1:])
    if not spectra:
        return centres, np.ones_like(centres)
    nps = np.mean(spectra, axis=0)
    which = np.clip(np.digitize(freq.ravel(), bins) - 1, 0, len(centres) - 1)
    total = np.bincount(which, nps.ravel(), minlength=len(centres))
    count = np.bincount(which, minlength=len(centres))
    radial = total / np.maximum(count, 1)
    filled = radial[count > 0]
    radial = np.interp(centres, centres[count > 0], filled)
    return centres, np.maximum(radial, 1e-6 * float(radial.max()))


def _template(signal_view: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The lesion's signal cropped around its support, odd-sized, and the crop's centre (row, col)."""
    peak = float(signal_view.max())
    support = signal_view > 0.02 * peak if peak > 0 else np.zeros_like(signal_view, dtype=bool)
    if support.any():
        ys, xs = np.nonzero(support)
        cy, cx = int(round((ys.min() + ys.max()) / 2)), int(round((xs.min() + xs.max()) / 2))
        half = int(max(ys.max() - ys.min(), xs.max() - xs.min()) // 2 + 2)
    else:
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        half = 2
    padded = np.pad(signal_view, half)
    crop = padded[cy:cy + 2 * half + 1, cx:cx + 2 * half + 1]
    return crop, (cy, cx)


def _extend(view: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """The breast's values carried outward to every pixel outside it (nearest breast pixel), so
    that filters see no artificial edge at the skin line, at collimation bands or labels."""
    if breast.all() or not breast.any():
        return view.copy()
    _, (rows, cols) = ndimage.distance_transform_edt(~breast, return_indices=True)
    return view[rows, cols]


def _response(view: np.ndarray, template: np.ndarray, nps: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """``view`` correlated with ``template`` (same size as ``view``, aligned on the template's
    centre; the view mirrored beyond its edges), divided by the NPS in the frequency domain
    when ``nps`` is given."""
    th, tw = template.shape
    py, px = th // 2 + 1, tw // 2 + 1
    padded = np.pad(view, ((py, py), (px, px)), mode="reflect")
    if nps is None:
        out = signal.fftconvolve(padded, template[::-1, ::-1], mode="same")
    else:
        shape = (padded.shape[0] + th, padded.shape[1] + tw)
        placed = np.zeros(shape)
        placed[:th, :tw] = template
        placed = np.roll(placed, (-(th // 2), -(tw // 2)), axis=(0, 1))  # template centre at the origin
        freq = np.hypot(*np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij"))
        power = np.interp(freq, nps[0], nps[1])
        spectrum = np.fft.fft2(padded, shape) * np.conj(np.fft.fft2(placed)) / power
        out = np.real(np.fft.ifft2(spectrum))[: padded.shape[0], : padded.shape[1]]
    return out[py:py + view.shape[0], px:px + view.shape[1]]


def _inside_boxes(shape: tuple[int, int], boxes: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for b in boxes:
        x0, y0 = max(int(np.floor(b[0])), 0), max(int(np.floor(b[1])), 0)
        x1, y1 = min(int(np.ceil(b[2])), shape[1]), min(int(np.ceil(b[3])), shape[0])
        out[y0:y1, x0:x1] = True
    return out


def _rank(response: np.ndarray, box: np.ndarray, window: int, candidates: np.ndarray) -> int:
    """1 + the local maxima among ``candidates`` that exceed the response inside ``box``."""
    own = _inside_boxes(response.shape, [box])
    if not own.any():
        return int(1 + candidates.sum())
    at_lesion = float(response[own].max())
    peaks = (response == ndimage.maximum_filter(response, size=window)) & candidates
    return int(1 + (response[peaks] > at_lesion).sum())


def measure_view(
    image: MammogramImage,
    dataset: Dataset,
    stored: np.ndarray,
    breast_mask: np.ndarray,
    signals: dict[str, LesionSignal],
    boxes: dict[str, list[int]],
    config: DetectorConfig | None = None,
) -> dict[str, Detectability]:
    """Detectability of every lesion with a box in this view (``boxes``: original pixels;
    ``breast_mask``: the phantom's breast, original pixels)."""
    config = config or DetectorConfig()
    # burned-in labels, nipple markers and collimation bands are written at the top value
    # over whatever was there: they are not breast tissue to search
    top = (1 << int(dataset.BitsStored)) - 1
    tissue = ndimage.binary_erosion(breast_mask & (stored < top), iterations=2)
    space = _InputSpace.of(image, tissue, config)
    view, breast = space.image(image.pixels), space.breast
    model_boxes = {k: space.transform.forward_boxes(np.asarray(b, dtype=np.float64))[0] for k, b in boxes.items()}
    every_box = _inside_boxes(view.shape, list(model_boxes.values()))
    candidates = breast & ~every_box
    lesion_free = stored.astype(np.float64)
    model_signals: dict[str, np.ndarray] = {}
    for lesion_id in boxes:
        if lesion_id not in signals:
            continue
        full = signals[lesion_id].full(stored.shape)
        lesion_free -= full
        without, _ = to_display(stored.astype(np.float64) - full, dataset)
        model_signals[lesion_id] = space.signal(image.pixels - without)
    free_display, _ = to_display(lesion_free, dataset)
    nps = noise_power_spectrum(space.image(free_display), breast)
    filled = _extend(view, breast)
    out: dict[str, Detectability] = {}
    for lesion_id, signal_view in model_signals.items():
        box = model_boxes[lesion_id]
        w, h = box[2] - box[0], box[3] - box[1]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = max(w, h) / 2
        yy, xx = np.ogrid[: view.shape[0], : view.shape[1]]
        r = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy)
        ring = (r >= ANNULUS[0] * half) & (r <= ANNULUS[1] * half) & candidates
        sd = float(view[ring].std()) if ring.sum() >= 16 else float(view[breast].std())
        snr = float(signal_view.max()) / max(sd, 1e-9)
        template, _ = _template(signal_view, box)
        pad = template.shape[0] // 2
        surround = np.pad(template, pad)
        zero_mean = surround - surround.mean()
        window = max(3, int(round(np.sqrt(max(w * h, 1.0)))) | 1)
        ranks = {
            "raw": _rank(_response(filled, template, None), box, window, candidates),
            "zero_mean": _rank(_response(filled, zero_mean, None), box, window, candidates),
            "prewhitened": _rank(_response(filled, template, nps), box, window, candidates),
        }
        out[lesion_id] = Detectability(snr, ranks)
    return out

