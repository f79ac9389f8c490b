"""Shared fixtures: phantom exams generated once per session, helpers to write DICOM variants."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from cad.tools.phantom.generate import generate

DATA = Path(__file__).parent / "data"
PHANTOM_SEED = 20261123


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
    return [phantom_dir / image["path"] for image in truth["exams"][0]["images"]]


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
