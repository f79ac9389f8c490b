"""Compressed transfer syntaxes decode to the original pixels (SRS-ING-003).

JPEG 2000 files are written with pydicom's encoder (OpenJPEG); JPEG-LS and JPEG Lossless files
with DCMTK's dcmcjpls and dcmcjpeg, real tools independent of the decoder under test.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, JPEGLSLossless

from cad.io import read_image

needs_dcmtk = pytest.mark.skipif(
    shutil.which("dcmcjpls") is None or shutil.which("dcmcjpeg") is None,
    reason="DCMTK (dcmcjpls, dcmcjpeg) not installed; `make test` installs Debian's dcmtk",
)


def _assert_same_pixels(original: Path, compressed: Path, syntax: str) -> None:
    assert str(pydicom.dcmread(compressed, stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax
    a, b = read_image(original), read_image(compressed)
    assert b.transfer_syntax_uid == syntax
    np.testing.assert_array_equal(b.pixels, a.pixels)
    assert (b.laterality, b.view, b.spacing) == (a.laterality, a.view, a.spacing)


@pytest.mark.req("SRS-ING-003")
def test_jpeg2000_lossless(exam_files: list[Path], tmp_path: Path) -> None:
    ds = pydicom.dcmread(exam_files[1])
    ds.compress(JPEG2000Lossless)
    out = tmp_path / "j2k.dcm"
    ds.save_as(out)
    _assert_same_pixels(exam_files[1], out, JPEG2000Lossless)


@needs_dcmtk
@pytest.mark.req("SRS-ING-003")
@pytest.mark.parametrize(
    ("tool", "option", "syntax", "source"),
    [
        ("dcmcjpls", "--encode-lossless", JPEGLSLossless, 2),
        ("dcmcjpeg", "--encode-lossless-sv1", JPEGLosslessSV1, 3),
    ],
    ids=["jpeg-ls-lossless", "jpeg-lossless-sv1"],
)
def test_dcmtk_compressed(
    exam_files: list[Path], tmp_path: Path, tool: str, option: str, syntax: str, source: int
) -> None:
    out = tmp_path / "compressed.dcm"
    subprocess.run([tool, option, str(exam_files[source]), str(out)], check=True)
    _assert_same_pixels(exam_files[source], out, syntax)


@needs_dcmtk
@pytest.mark.req("SRS-ING-003")
def test_corrupt_compressed_stream_is_one_error(exam_files: list[Path], tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate, generate_fragments

    out = tmp_path / "jls.dcm"
    subprocess.run(["dcmcjpls", "--encode-lossless", str(exam_files[0]), str(out)], check=True)
    ds = pydicom.dcmread(out)
    frame = b"".join(generate_fragments(ds.PixelData))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    ds.save_as(out)
    from cad.io import IngestErrorCode
    from cad.io.loader import load_file

    failure = load_file(out)
    assert getattr(failure, "code", None) is IngestErrorCode.CORRUPT_PIXEL_DATA
    assert str(failure).startswith(f"{out}: pixel data cannot be decoded")
