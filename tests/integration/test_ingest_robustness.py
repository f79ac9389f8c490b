"""Ingest never raises, whatever bytes a file holds (SRS-ING-012): property-based mutations of
phantom files, and a study with one malformed file."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cad.io import load
from cad.io.errors import IngestErrorCode
from cad.io.image import IngestFailure, MammogramImage
from cad.io.loader import load_file
from cad_tools.phantom.generate import PhantomConfig, generate

#: the phantom's patient attributes, which must never reach a log record
PATIENT_VALUES = ("PHANTOM^SYNTHETIC", "PHANTOM-")
#: value representations a mutation may write in place of an element's own
VRS = [b"AE", b"AS", b"CS", b"DA", b"DS", b"FD", b"IS", b"LO", b"OB", b"SQ", b"UI", b"UL", b"US", b"UN",
       b"UM", b"ZZ", b"\x00\x00"]
HEADER_BYTES = 4000  # mutations go where the header lies (pixel data damage has its own tests)


@pytest.fixture(scope="module")
def small_exam(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """One phantom exam at 0.5 mm (small files keep thousands of examples within a minute)."""
    out = tmp_path_factory.mktemp("small")
    generate(out, exams=1, seed=20261202, config=PhantomConfig(spacing_mm=0.5))
    return [path.read_bytes() for path in sorted(out.rglob("*.dcm"))]


def _vr_offsets(data: bytes) -> list[int]:
    """Offsets of what look like value representations in the header (an element's VR, or the
    same letters inside a value: either way a plausible corruption)."""
    return [132 + m.start() for m in re.finditer(rb"(?=(AE|AS|CS|DA|DS|FD|IS|LO|LT|OB|OW|PN|SH|SQ|TM|UI|UL|US))",
                                                 data[132:HEADER_BYTES])]


#: a mutation: (file index, kind, edits); kept small so that a failing example prints readably
Mutation = tuple[int, str, tuple[tuple[int, bytes], ...]]


@st.composite
def mutations(draw: st.DrawFn, files: list[bytes]) -> Mutation:
    index = draw(st.integers(0, len(files) - 1))
    data = files[index]
    end = min(len(data), HEADER_BYTES)
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "vr"]))
    if kind == "flip":
        edits = draw(st.lists(st.tuples(st.integers(128, end - 1), st.binary(min_size=1, max_size=1)),
                              min_size=1, max_size=8))
    elif kind == "truncate":
        edits = [(draw(st.integers(0, len(data) - 1)), b"")]
    elif kind == "insert":
        edits = [(draw(st.integers(128, end)), draw(st.binary(min_size=1, max_size=16)))]
    else:
        offsets = _vr_offsets(data)
        edits = [(offsets[draw(st.integers(0, len(offsets) - 1))], draw(st.sampled_from(VRS)))]
    return index, kind, tuple(edits)


def mutate(files: list[bytes], mutation: Mutation) -> bytes:
    index, kind, edits = mutation
    data = bytearray(files[index])
    for position, value in edits:
        if kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = value
        else:  # flip or vr: overwrite in place
            data[position:position + len(value)] = value
    return bytes(data)


@pytest.mark.req("SRS-ING-012", "SRS-ING-009")
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's, about the mutants (ingest silences them outside pytest)
def test_every_mutant_gives_an_image_or_a_failure(small_exam: list[bytes], tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "mutant.dcm"
    outcomes: dict[str, int] = {}

    @settings(max_examples=1500, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(mutations(small_exam))
    def check(mutation: Mutation) -> None:
        path.write_bytes(mutate(small_exam, mutation))
        outcome = load_file(path)  # must not raise
        assert isinstance(outcome, (MammogramImage, IngestFailure))
        if isinstance(outcome, IngestFailure):
            assert outcome.ref.path == path and outcome.message and isinstance(outcome.code, IngestErrorCode)
            assert outcome.code is not IngestErrorCode.INTERNAL_ERROR, outcome.message
        key = outcome.code.value if isinstance(outcome, IngestFailure) else "image"
        outcomes[key] = outcomes.get(key, 0) + 1

    with caplog.at_level(logging.DEBUG):
        check()
    assert sum(outcomes.values()) >= 1000
    assert outcomes.get(IngestErrorCode.MALFORMED_ELEMENT.value, 0) > 0  # the strategies reach the parser
    assert "image" in outcomes  # and harmless changes still load
    for value in PATIENT_VALUES:
        assert value not in caplog.text


@pytest.mark.req("SRS-ING-012", "SRS-ING-008")
def test_a_study_with_one_malformed_element_analyses_its_other_images(mass_phantom_dir: Path,
                                                                       tmp_path: Path) -> None:
    exam = tmp_path / "exam"
    shutil.copytree(mass_phantom_dir / "exam00000", exam)
    target = exam / "L_MLO.dcm"
    data = target.read_bytes()
    view_position = bytes.fromhex("1800 0151".replace(" ", ""))  # (0018,5101) ViewPosition, little endian
    at = data.index(view_position + b"CS")
    target.write_bytes(data[: at + 4] + b"UM" + data[at + 6:])  # an unknown VR, parsed lazily by pydicom
    (study,) = load([exam]).studies
    assert len(study.images) == 3
    (failure,) = study.failures
    assert failure.ref.path == target and failure.code is IngestErrorCode.MALFORMED_ELEMENT
    assert "(0018,5101)" in failure.message
