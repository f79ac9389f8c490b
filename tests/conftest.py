"""Shared fixtures: phantom exams generated once per session, helpers to write DICOM variants."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.dataset import Dataset

from cad.io.image import Laterality, MammogramImage, PixelSpacing, View
from cad_tools.phantom.generate import exam_files_of, generate

DATA = Path(__file__).parent / "data"
PHANTOM_SEED = 20261123
#: the four real 16-bit CC mammograms (PNG, no annotations; provenance in tests/data)
REAL_MAMMOGRAMS = sorted((DATA / "real-mammograms").glob("*.png"))
REAL_SPACING_MM = 0.085  # not recorded in the PNGs; typical for 2560 x 3328 detectors


def load_real_mammogram(path: Path) -> MammogramImage:
    """One real mammogram PNG as the image ingest would give (CC view, laterality from the name)."""
    stored = np.asarray(Image.open(path))
    return MammogramImage(
        path, path.stem, "real", "real", "png", Laterality(path.stem.split("_")[1]), View.CC,
        stored.astype(np.float32) / 65535.0, PixelSpacing(REAL_SPACING_MM, REAL_SPACING_MM, "assumed"),
        "MONOCHROME2", 16, "png",
    )


@pytest.fixture(scope="session")
def real_mammograms() -> dict[str, MammogramImage]:
    """The four real mammograms by file stem, loaded once."""
    return {path.stem: load_real_mammogram(path) for path in REAL_MAMMOGRAMS}


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 4-view phantom exams (seed fixed), shared read-only by the session."""
    out = tmp_path_factory.mktemp("phantom")
    generate(out, exams=2, seed=PHANTOM_SEED)
    return out


#: a seed whose first exam has two masses (11-16 mm) in the right breast
MASS_SEED = 20261133


@pytest.fixture(scope="session")
def mass_phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 4-view phantom exam with two right-breast masses, shared read-only."""
    out = tmp_path_factory.mktemp("mass-phantom")
    generate(out, exams=1, seed=MASS_SEED)
    return out


@pytest.fixture(scope="session")
def mass_truth(mass_phantom_dir: Path) -> dict[str, Any]:
    return json.loads((mass_phantom_dir / "truth.json").read_text())


@pytest.fixture(scope="session")
def truth(phantom_dir: Path) -> dict[str, Any]:
    return json.loads((phantom_dir / "truth.json").read_text())


@pytest.fixture(scope="session")
def exam_files(phantom_dir: Path, truth: dict[str, Any]) -> list[Path]:
    """The four files of the first phantom exam."""
    return exam_files_of(phantom_dir)[0]


@pytest.fixture()
def exam_copy(tmp_path: Path, exam_files: list[Path]) -> Path:
    """A private, modifiable copy of the first phantom exam."""
    out = tmp_path / "exam"
    out.mkdir()
    for path in exam_files:
        shutil.copy(path, out / path.name)
    return out


Modifier = Callable[[Dataset], None]


@pytest.fixture()
def write_variant(tmp_path: Path, exam_files: list[Path]) -> Callable[..., Path]:
    """Write a modified copy of a phantom image: ``write_variant(modify, name=..., source=0)``."""

    def _write(modify: Modifier, name: str = "variant.dcm", source: int = 0) -> Path:
        ds = pydicom.dcmread(exam_files[source])
        modify(ds)
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=False)
        return path

    return _write


@pytest.fixture(scope="session")
def two_stage_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-stage locked model: the released first stage and a seeded, untrained second stage,
    with both ONNX exports registered. The released model has no second stage (docs/detection.md);
    this keeps the second stage's code paths verified."""
    import torch

    from cad.detect.locked import MANIFEST_FILE, load_locked_model, register_export
    from cad.detect.rescore import RescoreSettings
    from cad_torch.export.onnx import RESCORER_RUNTIME_KEY, export_onnx, export_rescorer, register_onnx
    from cad_torch.network import locked_network, write_locked_model
    from cad_torch.rescore_network import DualViewRescorer

    first = load_locked_model()
    torch.manual_seed(20261202)
    network = DualViewRescorer().eval()
    folder = tmp_path_factory.mktemp("two-stage") / "model"
    write_locked_model(folder, locked_network(first), first.config, "two-stage-test", {"threshold": 0.5, "fpi": 1.0},
                       {"note": "test fixture"}, {}, rescorer=(network, RescoreSettings(network.config)))
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["linking"] = first.manifest.raw["linking"]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    model = load_locked_model(folder)
    register_onnx(folder, export_onnx(model, folder, write_manifest=False))
    register_export(folder, RESCORER_RUNTIME_KEY, export_rescorer(model, folder))
    return folder


class _WebhookHandler(BaseHTTPRequestHandler):
    """Records every JSON body POSTed to it (a site's alert gateway, for the alert tests)."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP endpoint on loopback: (its URL, the JSON bodies POSTed to it so far)."""
    _WebhookHandler.received = []
    server = HTTPServer(("127.0.0.1", 0), _WebhookHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", _WebhookHandler.received
    server.shutdown()


#: what highdicom sets to the time of writing in the SR and presentation state (all else is
#: determined by the inputs)
CREATION_TIMES = ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
                  "PresentationCreationDate", "PresentationCreationTime", "ContributingEquipmentSequence")


def _without_creation_times(path: Path) -> Dataset:
    """A written SR or GSPS without its creation dates and times, to compare two runs' objects."""
    dataset = pydicom.dcmread(path)
    for keyword in CREATION_TIMES:
        if keyword in dataset:
            delattr(dataset, keyword)
    return dataset


@pytest.fixture
def without_creation_times() -> Callable[[Path], Dataset]:
    """Reads a written SR or GSPS without its creation dates and times (two runs' objects compare equal)."""
    return _without_creation_times


def _until(predicate: Callable[[], Any], seconds: float = 180) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


@pytest.fixture
def until() -> Callable[..., Any]:
    """Polls ``predicate()`` until it gives a true value (returned) or ``seconds`` pass (an
    AssertionError); an HTTP error while a service starts counts as not yet."""
    return _until
