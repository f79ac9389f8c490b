"""Coded vocabularies for mammography views (DICOM CID 4014, CID 4015) and SOP classes."""

from __future__ import annotations

from pydicom.sr.codedict import codes

from cad.io.image import View

_CID4014 = codes.cid4014
_CID4015 = codes.cid4015

#: (coding scheme designator, code value) -> view. SNOMED CT codes from pydicom's CID 4014,
#: plus the SNOMED-RT (SRT) codes older modalities still write.
VIEW_CODES: dict[tuple[str, str], View] = {
    ("SCT", _CID4014.CranioCaudal.value): View.CC,
    ("SCT", _CID4014.MedioLateralObliqueProjection.value): View.MLO,
    ("SCT", _CID4014.MedioLateralProjection.value): View.ML,
    ("SCT", _CID4014.LateroMedial.value): View.LM,
    ("SCT", _CID4014.CranioCaudalExaggeratedLaterally.value): View.XCCL,
    ("SCT", _CID4014.CranioCaudalExaggeratedMedially.value): View.XCCM,
    ("SCT", _CID4014.CaudoCranial.value): View.FB,
    ("SCT", _CID4014.SuperolateralToInferomedialOblique.value): View.SIO,
    ("SCT", _CID4014.InferomedialToSuperolateralOblique.value): View.ISO,
    ("SCT", _CID4014.LateroMedialOblique.value): View.LMO,
    ("SRT", "R-10242"): View.CC,
    ("SRT", "R-10226"): View.MLO,
    ("SRT", "R-10224"): View.ML,
    ("SRT", "R-10228"): View.LM,
    ("SRT", "R-1024A"): View.XCCL,
    ("SRT", "R-1024B"): View.XCCM,
    ("SRT", "R-10244"): View.FB,
    ("SRT", "R-10230"): View.LMO,
}

#: The SNOMED CT code written for each supported view.
VIEW_CODE_FOR: dict[View, tuple[str, str, str]] = {
    View.CC: (_CID4014.CranioCaudal.value, "SCT", _CID4014.CranioCaudal.meaning),
    View.MLO: (
        _CID4014.MedioLateralObliqueProjection.value,
        "SCT",
        _CID4014.MedioLateralObliqueProjection.meaning,
    ),
}

#: ViewPosition (0018,5101) defined terms for mammography.
VIEW_POSITIONS: dict[str, View] = {v.value: v for v in View}

#: View modifiers (CID 4015) that make an image a diagnostic work-up view the CAD does not analyse.
UNSUPPORTED_MODIFIERS: dict[tuple[str, str], str] = {
    ("SCT", _CID4015.SpotCompression.value): "spot compression",
    ("SCT", _CID4015.Magnification.value): "magnification",
    ("SCT", _CID4015.ImplantDisplaced.value): "implant displaced",
    ("SCT", _CID4015.Tangential.value): "tangential",
    ("SCT", _CID4015.RolledLateral.value): "rolled lateral",
    ("SCT", _CID4015.RolledMedial.value): "rolled medial",
    ("SCT", _CID4015.RolledSuperior.value): "rolled superior",
    ("SCT", _CID4015.RolledInferior.value): "rolled inferior",
    ("SRT", "R-102D2"): "spot compression",
    ("SRT", "R-102D6"): "magnification",
}

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
