"""The generated DICOM Conformance Statement and the code agree (SRS-DCM-009): a real C-STORE
SCP accepts exactly the presentation contexts the statement lists, and the objects `cad detect`
writes use exactly the SOP classes, transfer syntax, character set and coded terms it states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, JPEGBaseline8Bit, JPEGExtended12Bit
from pynetdicom import AE, build_context

from cad_tools.orthanc import free_port
from traceability.conformance import conformance_page, scp_contexts, scu_contexts, sr_codes

CAD = [sys.executable, "-m", "cad.cli"]
#: syntaxes and classes a peer may propose that the statement does not list
NOT_LISTED_SYNTAXES = (JPEGBaseline8Bit, JPEGExtended12Bit, UID("1.2.840.10008.1.2.4.201"))  # HTJ2K lossless
NOT_LISTED_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.1.1")  # CT, DX For Presentation


def _accepted(port: int, abstract: str, syntax: str) -> bool:
    ae = AE(ae_title="CONFORMANCE")
    association = ae.associate("127.0.0.1", port, [build_context(abstract, syntax)], ae_title="MAMMO_CAD")
    try:
        return bool(association.is_established and association.accepted_contexts)
    finally:
        if association.is_established:
            association.release()


@pytest.mark.req("SRS-DCM-009")
def test_the_scp_accepts_exactly_the_stated_contexts(tmp_path: Path) -> None:
    from cad.service.sources import StoreScp

    stated = {(c.abstract_syntax, t) for c in scp_contexts() for t in c.transfer_syntaxes}
    syntaxes = {t for _, t in stated} | set(map(str, NOT_LISTED_SYNTAXES))
    classes = {a for a, _ in stated} | set(NOT_LISTED_CLASSES)
    port = free_port()
    scp = StoreScp(tmp_path / "state", "MAMMO_CAD", port, host="127.0.0.1")
    scp.start()
    try:
        negotiated = {(a, t) for a in sorted(classes) for t in sorted(syntaxes) if _accepted(port, a, t)}
    finally:
        scp.stop()
    assert negotiated == stated
    page = conformance_page()
    for abstract, syntax in stated:
        assert abstract in page and syntax in page


def _codes(ds: Dataset) -> set[tuple[str, str]]:
    found = set()
    for element in ds.iterall():
        if element.VR == "SQ" and element.keyword.endswith("CodeSequence"):
            found |= {(str(i.CodingSchemeDesignator), str(i.CodeValue)) for i in element.value if "CodeValue" in i}
    return found


@pytest.mark.req("SRS-DCM-009")
def test_written_objects_use_the_stated_classes_syntax_character_set_and_codes(mass_phantom_dir: Path,
                                                                               tmp_path: Path) -> None:
    ran = subprocess.run([*CAD, "detect", str(mass_phantom_dir), "--out", str(tmp_path), "--no-overlays"],
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    image = pydicom.dcmread(next(mass_phantom_dir.rglob("*.dcm")), stop_before_pixels=True)
    written = [pydicom.dcmread(p) for p in tmp_path.rglob("cad-*.dcm")]
    sr = next(ds for ds in written if ds.Modality == "SR")
    assert {str(ds.SOPClassUID) for ds in written} == {c.abstract_syntax for c in scu_contexts()}
    for ds in written:
        (context,) = [c for c in scu_contexts() if c.abstract_syntax == ds.SOPClassUID]
        assert (str(ds.file_meta.TransferSyntaxUID),) == context.transfer_syntaxes
        assert ds.get("SpecificCharacterSet") == image.get("SpecificCharacterSet")
        assert not any(element.tag.is_private for element in ds.iterall())
    stated = {(c.scheme_designator, c.value) for c in sr_codes()}
    missing = _codes(sr) - stated
    assert not missing, f"the SR emits codes the statement does not list: {sorted(missing)}"
