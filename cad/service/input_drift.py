"""Input drift of `cad serve`: what the images look like, per acquisition device.

Per analysed image the service stores the acquisition device (Manufacturer, model name and
software versions) and the facts that change images: kVp, exposure, compressed thickness,
compression force, detector pixel spacing, bits stored, and the distribution of the normalised
model input over the breast crop (5 quantiles). Per device, the latest :data:`WINDOW` images are
compared with the model's validation images (:mod:`cad.service.reference`) or that device's
first :data:`BASELINE` images at the site by a two-sample Kolmogorov-Smirnov test (scipy) per
fact; a fact drifts when the test rejects at :data:`P_VALUE` and the KS distance is at
least :data:`MIN_DISTANCE` (so that a large site does not alarm on a trivial difference). A device
never seen before is itself an event (a new detector, or a firmware update, which changes the
software versions). Only device names and numbers are stored, nothing about the patient.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from scipy.stats import ks_2samp

from cad.analysis.pipeline import AnalysedView
from cad.service.settings import InputDriftSettings

#: images of a device that form its site baseline, and the rolling window compared with it
BASELINE = InputDriftSettings.baseline_images
WINDOW = InputDriftSettings.window_images
#: a fact drifts when the KS test rejects at this level and the distance is at least this large
P_VALUE = InputDriftSettings.p_value
MIN_DISTANCE = InputDriftSettings.min_ks_distance
QUANTILES = (5, 25, 50, 75, 95)
#: header facts: fact name -> DICOM keyword (first value when multi-valued)
HEADER_FACTS = {"kvp": "KVP", "exposure_mas": "Exposure", "thickness_mm": "BodyPartThickness",
                "compression_n": "CompressionForce", "pixel_spacing_mm": "ImagerPixelSpacing",
                "bits_stored": "BitsStored"}
FACTS = (*HEADER_FACTS, *(f"input_p{q:02d}" for q in QUANTILES))


def _values(header: Dataset | None, keyword: str) -> list[Any]:
    value = header.get(keyword) if header is not None else None
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue) else [value]


def device_of(header: Dataset | None) -> str:
    """``Manufacturer / model / software versions`` of an image ("unknown" parts when absent)."""
    parts = (" ".join(str(v).strip() for v in _values(header, k))[:64] or "unknown"
             for k in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions"))
    return " / ".join(parts)


def _number(header: Dataset | None, keyword: str) -> float | None:
    values = _values(header, keyword)
    try:
        number = float(values[0]) if values else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and np.isfinite(number) else None


def image_facts(view: AnalysedView) -> dict[str, float | None]:
    """The input facts of one analysed image."""
    header = view.image.header
    facts: dict[str, float | None] = {name: _number(header, keyword) for name, keyword in HEADER_FACTS.items()}
    width, height = view.view_input.size
    crop = view.view_input.array[:height, :width]
    for q, value in zip(QUANTILES, np.percentile(crop, QUANTILES)):
        facts[f"input_p{q:02d}"] = round(float(value), 5)
    return facts


def record(connection: sqlite3.Connection, job_id: int, finished: float, views: list[AnalysedView]) -> None:
    """Store the input facts of every analysed image of one job."""
    connection.executemany(
        "INSERT OR REPLACE INTO image_facts (job_id, sop_uid, device, finished, facts) VALUES (?, ?, ?, ?, ?)",
        [(job_id, v.image.sop_instance_uid, device_of(v.image.header), finished,
          json.dumps(image_facts(v), sort_keys=True)) for v in views])


@dataclass(frozen=True)
class FactDrift:
    device: str
    fact: str
    distance: float
    p_value: float
    #: values compared: of the reference (site baseline or the model's validation images) and of the window
    baseline: int
    window: int
    drifting: bool
    #: "model" or "site": what the window was compared with
    reference: str = "site"


def devices(connection: sqlite3.Connection) -> dict[str, int]:
    """Every device seen, with its number of analysed images."""
    return {r["device"]: int(r["n"]) for r in
            connection.execute("SELECT device, COUNT(*) AS n FROM image_facts GROUP BY device ORDER BY MIN(finished)")}


def compare(connection: sqlite3.Connection, device: str, settings: InputDriftSettings | None = None,
            reference: Mapping[str, Sequence[float]] | None = None) -> list[FactDrift]:
    """Each fact of ``device``: its latest window against the model's validation ``reference``
    where it has the fact, else against the device's own first images (nothing is compared
    before the window, and where needed the site baseline, are full)."""
    settings = settings or InputDriftSettings()
    base_n, window_n = settings.baseline_images, settings.window_images
    reference = reference or {}
    count = connection.execute("SELECT COUNT(*) FROM image_facts WHERE device = ?", (device,)).fetchone()[0]
    if count < window_n:
        return []
    window = [json.loads(r["facts"]) for r in connection.execute(
        "SELECT facts FROM image_facts WHERE device = ? ORDER BY finished DESC, job_id DESC, sop_uid DESC LIMIT ?",
        (device, window_n))]
    site_full = count >= base_n + window_n
    baseline = [json.loads(r["facts"]) for r in connection.execute(
        "SELECT facts FROM image_facts WHERE device = ? ORDER BY finished, job_id, sop_uid LIMIT ?",
        (device, base_n))] if site_full and set(FACTS) - set(reference) else []
    out = []
    for fact in FACTS:
        after = [r[fact] for r in window if r.get(fact) is not None]
        if len(after) < window_n // 2:
            continue  # a fact the device rarely records is not compared
        if fact in reference:
            before, source = list(reference[fact]), "model"
        elif site_full:
            before, source = [r[fact] for r in baseline if r.get(fact) is not None], "site"
            if len(before) < base_n // 2:
                continue
        else:
            continue
        test = ks_2samp(before, after)
        distance, p_value = round(float(test.statistic), 4), float(test.pvalue)
        out.append(FactDrift(device, fact, distance, p_value, len(before), len(after),
                             p_value < settings.p_value and distance >= settings.min_ks_distance, source))
    return out


def summary(connection: sqlite3.Connection, settings: InputDriftSettings | None = None,
            reference: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """Per device: images seen and each compared fact (for the API and the dashboard)."""
    return {device: {"images": count, "facts": {d.fact: {"ks_distance": d.distance, "p_value": d.p_value,
                                                          "drifting": d.drifting, "reference": d.reference}
                                                for d in compare(connection, device, settings, reference)}}
            for device, count in devices(connection).items()}
