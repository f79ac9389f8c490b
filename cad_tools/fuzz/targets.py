"""The fuzz targets: every parser a user feeds, each with the errors it documents.

A target takes raw bytes and must end in a result or one of its documented errors; any other
exception is a defect (atheris reports it as a crash and saves the input). The same targets run
bounded under hypothesis inside `make test` (tests/unit/test_fuzz_targets.py).
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    #: the errors the parser documents (anything else is a defect)
    expected: tuple[type[BaseException], ...]
    #: what a seed file of this target is named like (suffix)
    suffix: str


def _ingest(data: bytes) -> object:
    from cad.io.dicom_reader import image_from_dataset, read_dataset

    path = Path("fuzz.dcm")
    ds = read_dataset(io.BytesIO(data), path)
    return image_from_dataset(ds, path)


def _in_file(data: bytes, suffix: str, read: Callable[[Path], object]) -> object:
    with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
        handle.write(data)
        handle.flush()
        return read(Path(handle.name))


def _reader_study_csv(data: bytes) -> object:
    from verification.readerstudy.io import read_reader_study

    return _in_file(data, ".csv", read_reader_study)


def _jafroc(data: bytes) -> object:
    from verification.readerstudy.io import read_jafroc

    return _in_file(data, ".xlsx", read_jafroc)


def _outcomes(data: bytes) -> object:
    from cad.service.outcomes import parse, read_text

    return _in_file(data, ".csv", lambda path: parse(path, read_text(path)))


def _findings(data: bytes) -> object:
    from cad.result.findings_json import result_from_dict
    from cad.result.model import ResultError

    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise ResultError("not JSON") from None
    if not isinstance(value, dict):
        raise ResultError("not a JSON object")
    return result_from_dict(value)


def targets() -> dict[str, Target]:
    from cad.io.errors import IngestError
    from cad.result.model import ResultError
    from cad.service.outcomes import OutcomesError
    from verification.readerstudy.data import ReaderStudyInputError

    return {t.name: t for t in (
        Target("ingest", _ingest, (IngestError,), ".dcm"),
        Target("reader-study", _reader_study_csv, (ReaderStudyInputError,), ".csv"),
        Target("jafroc", _jafroc, (ReaderStudyInputError,), ".xlsx"),
        Target("outcomes", _outcomes, (OutcomesError,), ".csv"),
        Target("findings", _findings, (ResultError,), ".json"),
    )}


def check(target: Target, data: bytes) -> None:
    """Run one input; return when it ends in a result or a documented error, raise otherwise."""
    try:
        target.run(data)
    except target.expected:
        pass
