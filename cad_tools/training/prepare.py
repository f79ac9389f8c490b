"""Training images through the device's own ingest and preprocessing, cached on disk.

Dataset headers are harmonised first: facts a dataset keeps in its CSVs (laterality, view,
pixel spacing of digitised film) are written into the header only where the header lacks
them, and digitised-film Secondary Capture objects are read as For Presentation mammograms.
The pixels then take exactly the inference path (:func:`cad.detect.inputs.prepare_view`).
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from cad.detect.config import DetectorConfig
from cad.detect.inputs import prepare_view
from cad.io.codes import MG_FOR_PRESENTATION
from cad.io.dicom_reader import image_from_dataset, read_dataset
from cad.io.errors import IngestError
from cad.preprocess.mask import NoBreastError
from cad_tools.training.datasets import AnnotatedImage

log = logging.getLogger(__name__)
CACHE_VERSION = "1"


@dataclass(frozen=True)
class PreparedImage:
    """A model-input array (float16) with mass boxes and other-finding boxes in its pixels."""

    array: np.ndarray
    boxes: np.ndarray
    other_boxes: np.ndarray
    source: str
    name: str


def harmonise_header(ds: Dataset, item: AnnotatedImage) -> None:
    """Fill header facts the dataset keeps elsewhere, never overriding what the header says."""
    if item.laterality and not (ds.get("ImageLaterality") or ds.get("Laterality")):
        ds.ImageLaterality = item.laterality
    if item.view and not (ds.get("ViewCodeSequence") or ds.get("ViewPosition")):
        ds.ViewPosition = item.view
    if item.spacing_mm and not (ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")):
        ds.ImagerPixelSpacing = [item.spacing_mm, item.spacing_mm]
    if str(ds.get("SOPClassUID", "")) == "1.2.840.10008.5.1.4.1.1.7" and ds.get("Modality") == "MG":
        ds.SOPClassUID = MG_FOR_PRESENTATION  # digitised film distributed as Secondary Capture


def _boxes(values: tuple, view_input) -> np.ndarray:  # type: ignore[no-untyped-def]
    if not values:
        return np.zeros((0, 4), dtype=np.float32)
    return view_input.to_model(np.asarray(values, dtype=np.float64)).astype(np.float32)


def prepare_one(item: AnnotatedImage, config: DetectorConfig) -> PreparedImage | str:
    """One training image as model input, or the reason it cannot be used."""
    try:
        ds = read_dataset(item.path)
        harmonise_header(ds, item)
        image = image_from_dataset(ds, item.path)
    except IngestError as exc:
        return str(exc)
    try:
        view_input = prepare_view(image, config)
    except NoBreastError as exc:
        return f"{item.path}: breast region could not be found ({exc})"
    width, height = view_input.size
    return PreparedImage(
        view_input.array[:height, :width].astype(np.float16),
        _boxes(item.boxes, view_input),
        _boxes(item.other_boxes, view_input),
        item.source,
        item.path.name,
    )


def _cache_key(item: AnnotatedImage, config: DetectorConfig) -> str:
    stat = item.path.stat()
    text = "|".join(
        [CACHE_VERSION, str(item.path.resolve()), str(stat.st_size), str(stat.st_mtime_ns),
         repr(item.boxes), repr(item.other_boxes), repr(item.laterality), repr(item.view),
         repr(item.spacing_mm), str(config.target_mm), str(config.clip)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _prepare_cached(item: AnnotatedImage, config: DetectorConfig, cache: Path) -> PreparedImage | str:
    path = cache / f"{_cache_key(item, config)}.npz"
    if path.is_file():
        with np.load(path) as data:
            return PreparedImage(data["array"], data["boxes"], data["other"], item.source, item.path.name)
    result = prepare_one(item, config)
    if isinstance(result, PreparedImage):
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, array=result.array, boxes=result.boxes, other=result.other_boxes)
        tmp.replace(path)
    return result


def prepare_all(
    items: list[AnnotatedImage], config: DetectorConfig, cache: Path, workers: int = 2
) -> tuple[list[PreparedImage], list[str]]:
    """Prepare every item (cached); returns the usable images and one line per refused file."""
    cache.mkdir(parents=True, exist_ok=True)
    if workers > 1 and len(items) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_prepare_cached, items, repeat(config), repeat(cache), chunksize=8))
    else:
        results = [_prepare_cached(item, config, cache) for item in items]
    prepared = [r for r in results if isinstance(r, PreparedImage)]
    refused = [r for r in results if isinstance(r, str)]
    for line in refused:
        log.warning("training image refused: %s", line)
    return prepared, refused
