"""Read a Mammography CAD SR written by the device back into the findings model.

The inverse of :mod:`cad.report.sr.build`, written against the DICOM content tree only (plain
pydicom), so that it checks the document rather than trusting the writer's objects. What the SR
does not carry (file names, link costs, finding locations) comes back as ``None``; :func:`carried` gives the part of
findings.json a round trip must reproduce exactly.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from cad.errors import UsageError
from cad.io.codes import VIEW_CODES
from cad.io.image import Laterality, View
from cad.report.sr import enum as sr
from cad.report.sr.build import LINK_PROBABILITY_KEY, PARAMETER_KEYS, REASON_KEY
from cad.result.findings_json import result_from_dict, result_to_dict
from cad.result.model import (
    ANALYZED,
    BOX_DIGITS,
    FINDING_TYPE,
    NOT_ANALYZED,
    SCORE_DIGITS,
    Algorithm,
    Finding,
    FindingView,
    ImageStatus,
    StudyResult,
    image_sort_key,
)


class SRReadError(UsageError):
    """The file is not a Mammography CAD SR this device can read; the message says why."""


def _key(code_sequence: Any) -> tuple[str, str]:
    item = code_sequence[0]
    return str(item.CodeValue), str(item.CodingSchemeDesignator)


def _is(item: Dataset, concept: Any) -> bool:
    return "ConceptNameCodeSequence" in item and _key(item.ConceptNameCodeSequence) == (
        concept.value, concept.scheme_designator)


def _children(item: Dataset, concept: Any | None = None) -> list[Dataset]:
    return [c for c in item.get("ContentSequence", []) if concept is None or _is(c, concept)]


def _one(item: Dataset, concept: Any, where: str) -> Dataset:
    found = _children(item, concept)
    if len(found) != 1:
        raise SRReadError(f"{where}: expected one {concept.meaning!r}, found {len(found)}")
    return found[0]


def _references(item: Dataset) -> list[tuple[int, ...]]:
    return [tuple(int(p) for p in c.ReferencedContentItemIdentifier)
            for c in item.get("ContentSequence", []) if "ReferencedContentItemIdentifier" in c]


def _parameters(item: Dataset) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in _children(item, sr.ALGORITHM_PARAMETERS):
        key, _, value = str(text.TextValue).partition("=")
        out[key] = value
    return out


def _percent(item: Dataset, concept: Any, where: str) -> float:
    num = _one(item, concept, where)
    return round(float(num.MeasuredValueSequence[0].NumericValue) / 100.0, SCORE_DIGITS)


class _Library:
    """Image Library entries by their content-item path."""

    def __init__(self, root: Dataset) -> None:
        self.entries: dict[tuple[int, ...], Dataset] = {}
        for i, child in enumerate(root.get("ContentSequence", []), start=1):
            if _is(child, sr.IMAGE_LIBRARY):
                for k, entry in enumerate(child.get("ContentSequence", []), start=1):
                    self.entries[(1, i, k)] = entry
        if not self.entries:
            raise SRReadError("the document has no Image Library entries")
        self.by_uid = {self.uid(entry): entry for entry in self.entries.values()}

    def image(self, path: tuple[int, ...]) -> Dataset:
        try:
            return self.entries[path]
        except KeyError:
            raise SRReadError(f"reference {'.'.join(map(str, path))} is not an Image Library entry") from None

    @staticmethod
    def uid(entry: Dataset) -> str:
        return str(entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)

    @staticmethod
    def laterality(entry: Dataset) -> Laterality | None:
        for code in _children(entry, sr.IMAGE_LATERALITY):
            key = _key(code.ConceptCodeSequence)
            for letter, side in sr.LATERALITY_CODES.items():
                if key == (side.value, side.scheme_designator):
                    return Laterality(letter)
        return None

    @staticmethod
    def view(entry: Dataset) -> View | None:
        for code in _children(entry, sr.IMAGE_VIEW):
            view = VIEW_CODES.get(tuple(reversed(_key(code.ConceptCodeSequence))))  # type: ignore[arg-type]
            if view is not None:
                return view
        return None


def _finding_view(sif: Dataset, library: _Library) -> FindingView:
    outline = _one(sif, sr.OUTLINE, "single image finding")
    points = [float(v) for v in outline.GraphicData]
    xs, ys = points[0::2], points[1::2]
    refs = _references(outline)
    if len(refs) != 1:
        raise SRReadError("an Outline must be selected from exactly one image")
    entry = library.image(refs[0])
    box = tuple(round(v, BOX_DIGITS) for v in (min(xs), min(ys), max(xs), max(ys)))
    view = _Library.view(entry)
    if view is None:
        raise SRReadError(f"image {_Library.uid(entry)} with a finding has no Image View")
    return FindingView(_Library.uid(entry), view, box, _percent(sif, sr.CERTAINTY_OF_FINDING, "single image finding"))  # type: ignore[arg-type]


def _tracking_id(item: Dataset) -> str:
    return str(_one(item, sr.TRACKING_IDENTIFIER, "finding").TextValue)


def _findings(summary: Dataset, library: _Library) -> list[Finding]:
    out: list[Finding] = []
    for impression in _children(summary, sr.INDIVIDUAL_IMPRESSION_RECOMMENDATION):
        composite = _children(impression, sr.COMPOSITE_FEATURE)
        if composite:
            feature = composite[0]
            views = tuple(_finding_view(s, library) for s in _children(feature, sr.SINGLE_IMAGE_FINDING))
            score = _percent(feature, sr.CERTAINTY_OF_FEATURE, "composite feature")
            finding_id = _tracking_id(feature)
            probability = _parameters(feature).get(LINK_PROBABILITY_KEY)
            link_probability = round(float(probability), SCORE_DIGITS) if probability is not None else None
        else:
            sif = _one(impression, sr.SINGLE_IMAGE_FINDING, "individual impression")
            views = (_finding_view(sif, library),)
            score = views[0].score
            finding_id = _tracking_id(sif)
            link_probability = None
        lateralities = {_Library.laterality(library.by_uid[v.sop_instance_uid]) for v in views}
        if len(lateralities) != 1 or None in lateralities:
            raise SRReadError(f"finding {finding_id}: its views are not of one known breast")
        out.append(Finding(finding_id, lateralities.pop(), FINDING_TYPE, score, views,  # type: ignore[arg-type]
                           link_probability=link_probability))
    return out


def findings_from_sr(ds: Dataset) -> StudyResult:
    """The findings model a Mammography CAD SR encodes; raises :class:`SRReadError`."""
    if str(ds.get("SOPClassUID", "")) != sr.MAMMOGRAPHY_CAD_SR_STORAGE:
        raise SRReadError(f"not a Mammography CAD SR (SOP Class {ds.get('SOPClassUID', 'absent')})")
    templates = ds.get("ContentTemplateSequence", [])
    if not templates or str(templates[0].TemplateIdentifier) != sr.ROOT_TEMPLATE_ID or not _is(ds, sr.MAMMOGRAPHY_CAD_REPORT):
        raise SRReadError("the document root is not TID 4000 Mammography CAD Report")
    library = _Library(ds)
    detections = _one(ds, sr.SUMMARY_OF_DETECTIONS, "document root")
    statuses: dict[tuple[int, ...], ImageStatus] = {}
    algorithm: Algorithm | None = None
    threshold: float | None = None
    for concept, status in ((sr.SUCCESSFUL_DETECTIONS, ANALYZED), (sr.FAILED_DETECTIONS, NOT_ANALYZED)):
        for container in _children(detections, concept):
            for performed in _children(container, sr.DETECTION_PERFORMED):
                params = _parameters(performed)
                if algorithm is None:
                    algorithm = Algorithm(
                        str(_one(performed, sr.ALGORITHM_NAME, "detection performed").TextValue),
                        str(_one(performed, sr.ALGORITHM_VERSION, "detection performed").TextValue),
                        params.get("model_sha256", ""), params.get("model_name"), params.get("settings_sha256"),
                        params.get("runtime_variant"), params.get("released") != "false",
                    )
                    threshold = float(params["operating_threshold"]) if "operating_threshold" in params else None
                for path in _references(performed):
                    entry = library.image(path)
                    reason = params.get(REASON_KEY) if status == NOT_ANALYZED else None
                    statuses[path] = ImageStatus(_Library.uid(entry), _Library.laterality(entry),
                                                 _Library.view(entry), status, reason, None)
    if algorithm is None or threshold is None:
        raise SRReadError("no Detection Performed names the algorithm and its operating point "
                          f"(parameters {', '.join(PARAMETER_KEYS)})")
    return StudyResult(str(ds.StudyInstanceUID), algorithm, threshold,
                       tuple(sorted(statuses.values(), key=image_sort_key)),
                       tuple(_findings(_one(ds, sr.CAD_PROCESSING_AND_FINDINGS_SUMMARY, "document root"), library)))


def read_mammography_cad_sr(path: Path | str) -> StudyResult:
    """Read an SR file; errors name the file."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a readable SR"
        raise SRReadError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
    try:
        return findings_from_sr(ds)
    except SRReadError as exc:
        raise SRReadError(f"{path}: {exc}") from None
    except (AttributeError, KeyError, IndexError, ValueError) as exc:
        raise SRReadError(f"{path}: malformed Mammography CAD SR ({type(exc).__name__}: {exc})") from None


def carried(findings: dict[str, Any]) -> dict[str, Any]:
    """The part of a findings.json document an SR carries: the CAD marks (:attr:`StudyResult.marks`)
    without link costs and locations (findings.json 1.4 only, until the SR codes them), and the
    images identified by a SOP Instance UID without file names and ingest error codes."""
    result = result_from_dict(findings)
    kept = replace(result,
                   images=tuple(replace(i, file=None, error_code=None) for i in result.images if i.sop_instance_uid),
                   findings=tuple(replace(f, link_cost=None, location=None) for f in result.marks))
    return result_to_dict(kept)
