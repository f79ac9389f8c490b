"""The result contract: the typed study result (:mod:`cad.result.model`) and its one JSON form,
findings.json (:mod:`cad.result.findings_json`). Pure data: imports nothing but ingest's enums,
so a reader of results (an SR reader, the evaluation) never loads the network."""

from cad.result.model import (
    ANALYZED,
    FINDING_TYPE,
    NOT_ANALYZED,
    Algorithm,
    Finding,
    FindingType,
    FindingView,
    ImageState,
    ImageStatus,
    ResultError,
    StudyResult,
)

__all__ = [
    "ANALYZED", "FINDING_TYPE", "NOT_ANALYZED", "Algorithm", "Finding", "FindingType", "FindingView", "ImageState",
    "ImageStatus", "ResultError", "StudyResult",
]
