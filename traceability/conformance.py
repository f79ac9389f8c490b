"""The DICOM Conformance Statement (PS3.2 layout), generated from the device's own tables.

Nothing here is typed by hand about what the device does: SOP classes, transfer syntaxes, roles,
AE titles, DICOMweb transactions, the SR template's coded terms, the attributes copied into the
outputs and the de-identification options are read from the modules that use them.
`tests/integration/test_conformance.py` checks that the code behaves as these tables say (a
real SCP negotiates exactly these contexts, the written objects use exactly these classes,
syntax, character set and codes), so the statement and the code cannot disagree silently.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.sr.coding import Code
from pydicom.uid import UID

import cad
from traceability.rst import heading, list_table


@dataclass(frozen=True)
class PresentationContext:
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]
    role: str
    extended_negotiation: str = "none"


def uid_name(uid: str) -> str:
    return UID(uid).name if UID(uid).is_valid and UID(uid).name != uid else uid


def scp_contexts() -> list[PresentationContext]:
    """What the C-STORE SCP of `cad serve --scp` accepts."""
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from cad.service.sources import SCP_SOP_CLASSES, SCP_TRANSFER_SYNTAXES

    contexts = [PresentationContext(uid, tuple(sorted(SCP_TRANSFER_SYNTAXES)), "SCP") for uid in SCP_SOP_CLASSES]
    from pynetdicom import DEFAULT_TRANSFER_SYNTAXES

    contexts.append(PresentationContext(str(Verification), tuple(DEFAULT_TRANSFER_SYNTAXES), "SCP"))
    return contexts


def scu_contexts() -> list[PresentationContext]:
    """What the C-STORE SCU of `cad serve --send` proposes."""
    from cad.report.outputs import OUTPUT_SOP_CLASSES, OUTPUT_TRANSFER_SYNTAX

    return [PresentationContext(uid, (str(OUTPUT_TRANSFER_SYNTAX),), "SCU") for uid in OUTPUT_SOP_CLASSES]


def sr_codes() -> list[Code]:
    """Every coded concept the Mammography CAD SR writer can emit: its vocabulary
    (cad.report.sr.enum, including what highdicom writes on its behalf) and its units
    (cad.report.sr.content)."""
    from cad.report.sr import content as sr_content
    from cad.report.sr import enum as sr_enum

    found: dict[tuple[str, str], Code] = {}

    def collect(value: Any) -> Iterator[Code]:
        if isinstance(value, Code):
            yield value
        elif isinstance(value, tuple):
            for item in value:
                yield from collect(item)
        elif isinstance(value, enum.EnumMeta):
            for member in value:  # type: ignore[var-annotated]
                yield from collect(member.value)
        elif isinstance(value, dict):
            for item in value.values():
                yield from collect(item)

    for module in (sr_enum, sr_content):
        for name in dir(module):
            if not name.startswith("_"):
                for code in collect(getattr(module, name)):
                    found.setdefault((code.scheme_designator, code.value), code)
    from cad.io.codes import VIEW_CODE_FOR

    for value, scheme, meaning in VIEW_CODE_FOR.values():  # Image View of the Image Library entries
        found.setdefault((scheme, value), Code(value, scheme, meaning))
    return sorted(found.values(), key=lambda c: (c.scheme_designator, c.value))


def _table(header: list[str], rows: list[list[Any]], widths: list[int] | None = None) -> str:
    return list_table(header, rows, widths)


def conformance_page() -> str:
    """The statement as reStructuredText."""
    from pynetdicom import AE

    from cad.deid.export import METHODS
    from cad.io.codes import MG_FOR_PRESENTATION, MG_FOR_PROCESSING
    from cad.io.dicom_reader import LOSSY_TRANSFER_SYNTAXES, MAX_PIXELS, SUPPORTED_TRANSFER_SYNTAXES
    from cad.io.dicomweb import DICOMWEB_TRANSACTIONS
    from cad.report.gsps import CONTENT_LABEL
    from cad.report.outputs import OUTPUT_SOP_CLASSES, OUTPUT_TRANSFER_SYNTAX
    from cad.report.sr.build import PARAMETER_KEYS, TYPE2_COPIED
    from cad.report.sr.enum import ROOT_TEMPLATE_ID, TEMPLATE_MAPPING_RESOURCE
    from cad.service.sources import SCU_AE_TITLE

    out = [heading(f"DICOM Conformance Statement: mammo-cad {cad.__version__}")]
    out.append("*Generated* from the device's own tables (``traceability/conformance.py``); "
               "``tests/integration/test_conformance.py`` fails when the code and this statement disagree. "
               "Layout of DICOM PS3.2.\n\n")
    out.append(heading("1 Overview", "-"))
    out.append("mammo-cad reads mammograms (MG For Presentation), finds masses and writes its results as a "
               "Mammography CAD SR and Grayscale Softcopy Presentation States. It receives images as a C-STORE SCP, "
               "fetches them from a PACS as a DICOMweb user agent (QIDO-RS, WADO-RS) or reads DICOM files; it "
               "delivers results as a C-STORE SCU or with STOW-RS, and writes them as files.\n\n")
    rows = [[f"{uid_name(c.abstract_syntax)}", c.abstract_syntax, "yes" if c.role == "SCU" else "no",
             "yes" if c.role == "SCP" else "no"] for c in scu_contexts() + scp_contexts()]
    out.append(_table(["SOP class", "UID", "user of service (SCU)", "provider of service (SCP)"], rows,
                      [35, 35, 15, 15]))
    out.append(_table(["DICOMweb transaction", "role", "use"],
                      [[t, "user agent (origin)", u] for t, u, _ in DICOMWEB_TRANSACTIONS], [25, 25, 50]))
    out.append(heading("2 Introduction", "-"))
    out.append("Audience: PACS administrators and integration engineers. The device is a CAD (computer-aided "
               "detection) adjunct; it never modifies the images it reads. Remarks: the device has no worklist, "
               "query/retrieve SCP, storage commitment or print services.\n\n")
    out.append(heading("3 Networking", "-"))
    out.append(heading("3.1 Implementation model", "~"))
    out.append("One application entity (the service, `cad serve`) with three real-world activities: **receive** "
               "(images pushed to the SCP are filed by study; a study is queued after a quiet period), **fetch** "
               "(a DICOMweb PACS is polled with QIDO-RS; new studies are retrieved with WADO-RS), and **deliver** "
               "(each study's SR and presentation states are stored back with STOW-RS or sent with C-STORE). "
               "`cad batch --dicomweb` uses QIDO-RS and WADO-RS the same way. Files (`cad detect`, `cad batch`) "
               "are read and written as DICOM Part 10 files (section 4).\n\n")
    out.append(heading("3.2 AE specifications", "~"))
    out.append(f"Calling AE title of the SCU: ``{SCU_AE_TITLE}``. The SCP's AE title and port are configured "
               "(``--scp AET:PORT``); it accepts associations from any calling AE title or only those listed in "
               "``--scp-allow``. Implementation Class UID and Version Name are pynetdicom's (network) and "
               f"highdicom's (files). Maximum PDU size received: {AE().maximum_pdu_size:,} bytes (pynetdicom's default); "
               f"at most {AE().maximum_associations} concurrent associations; one association per delivery.\n\n")
    out.append(heading("Presentation contexts accepted (SCP)", "^"))
    out.append(_table(["abstract syntax", "transfer syntaxes", "role", "extended negotiation"],
                      [[f"{uid_name(c.abstract_syntax)} ({c.abstract_syntax})",
                        "; ".join(f"{uid_name(t)} ({t})" for t in c.transfer_syntaxes), c.role, c.extended_negotiation]
                       for c in scp_contexts()], [28, 52, 8, 12]))
    out.append(f"Images received of {uid_name(MG_FOR_PROCESSING)} are recorded as not analysed (For Processing "
               f"is out of scope); {uid_name(MG_FOR_PRESENTATION)} images are analysed. An instance with an invalid "
               "Study or SOP Instance UID is refused with status C211. Status 0000 otherwise.\n\n")
    out.append(heading("Presentation contexts proposed (SCU)", "^"))
    out.append(_table(["abstract syntax", "transfer syntax", "role", "extended negotiation"],
                      [[f"{uid_name(c.abstract_syntax)} ({c.abstract_syntax})",
                        "; ".join(f"{uid_name(t)} ({t})" for t in c.transfer_syntaxes), c.role, c.extended_negotiation]
                       for c in scu_contexts()], [35, 40, 10, 15]))
    out.append("A C-STORE response other than Success (0000) or a Warning (B000, B006, B007) fails the delivery; "
               "the service retries with backoff and then records the study failed with an alert.\n\n")
    out.append(heading("3.3 DICOMweb (PS3.18) as a user agent", "~"))
    out.append(_table(["transaction", "resource", "parameters and handling"],
                      [list(t) for t in DICOMWEB_TRANSACTIONS], [15, 30, 55]))
    out.append("Authentication: an ``Authorization`` header (Bearer or Basic) from ``--dicomweb-auth-file``; "
               "HTTPS with the system's certificate authorities for https URLs.\n\n")
    out.append(heading("4 Media interchange", "-"))
    out.append("Files: DICOM Part 10 files read from folders or named directly (``DICOMDIR`` is not used) and "
               "written per study (``cad-sr.dcm``, ``cad-pr.dcm`` or ``cad-pr-N.dcm``).\n\n")
    out.append(heading("4.1 Transfer syntaxes read", "~"))
    out.append(_table(["transfer syntax", "UID", "note"],
                      [[uid_name(t), t, "lossy: analysed, with a warning in the outputs" if t in LOSSY_TRANSFER_SYNTAXES
                        else ""] for t in sorted(SUPPORTED_TRANSFER_SYNTAXES)], [40, 30, 30]))
    out.append(f"Any other transfer syntax is refused before decoding and the image recorded as not analysed; an "
               f"image above {MAX_PIXELS:,} decoded pixels is refused from its header.\n\n")
    out.append(heading("5 Support of character sets", "-"))
    out.append("Images may use any character set pydicom decodes. The SR and presentation states copy the Specific "
               "Character Set of the images they reference (the patient and study attributes are copied from them); "
               "the device adds only ASCII text.\n\n")
    out.append(heading("6 Security", "-"))
    out.append("The HTTP API needs a bearer token and HTTPS off loopback; the SCP can restrict calling AE titles; "
               "DICOM associations are not encrypted (no DICOM TLS profile). De-identified export "
               "(``cad deidentify``) applies the PS3.15 Basic Application Level Confidentiality Profile with these "
               "options, recorded in the Deidentification Method Code Sequence:\n\n")
    out.append(_table(["code", "scheme", "meaning"], [[c.value, c.scheme_designator, c.meaning] for c in METHODS],
                      [15, 15, 70]))
    out.append(heading("7 Annexes", "-"))
    out.append(heading("7.1 IOD contents of created SOP instances", "~"))
    out.append(_table(["SOP class", "UID", "written in"],
                      [[name, uid, f"{uid_name(str(OUTPUT_TRANSFER_SYNTAX))} ({OUTPUT_TRANSFER_SYNTAX})"]
                       for uid, name in OUTPUT_SOP_CLASSES.items()], [40, 30, 30]))
    out.append(f"Mammography CAD SR: root template TID {ROOT_TEMPLATE_ID} ({TEMPLATE_MAPPING_RESOURCE}) "
               "Mammography CAD Document; Image Library (TID 4020) of every image of the study; CAD Processing "
               "and Findings Summary with each mark at or above the locked operating point (Single Image Finding, "
               "or Composite Feature for a finding linked across CC and MLO); Summary of Detections (Successful / "
               "Failed, the reason of each image not analysed as an Algorithm Parameter) and Summary of Analyses "
               "(spatial collocation). Algorithm Parameters carry ``key=value`` for: "
               + ", ".join(f"``{k}``" for k in PARAMETER_KEYS) + ". A later result of a study names the earlier SR "
               "in the Predecessor Documents Sequence.\n\n"
               f"Grayscale Softcopy Presentation State: Content Label ``{CONTENT_LABEL}`` (``{CONTENT_LABEL}_V<n>`` "
               "for the n-th result of a study), one graphic layer of boxes and labels per mark, the referenced "
               "images' VOI; one presentation state per image size.\n\n")
    out.append(heading("7.2 Attributes copied from the source images", "~"))
    out.append("Patient, study and equipment-independent identification attributes are copied by highdicom from "
               "the images (Patient and General Study modules); those of Type 2 the images lack are written empty: "
               + ", ".join(f"``{k}``" for k in TYPE2_COPIED) + ".\n\n")
    out.append(heading("7.3 Coded terminology emitted in the SR", "~"))
    out.append(_table(["code value", "coding scheme", "code meaning"],
                      [[c.value, c.scheme_designator, c.meaning] for c in sr_codes()], [20, 15, 65]))
    out.append(heading("7.4 Private attributes", "~"))
    out.append("None written.\n\n")
    return "".join(out)
