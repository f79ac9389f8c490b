"""findings.json: the one writer and reader of a :class:`~cad.result.model.StudyResult`.

Canonical serialisation (sorted keys, fixed rounding, findings in result order), so the same
result gives byte-identical files. The schema is cad/schemas/findings.schema.json; version 1.1
added ``error_code`` to images that ingest refused and ``algorithm.runtime_variant`` to results of
a runtime variant, 1.2 the per-breast completeness ``breasts`` and ``exam_complete``, 1.3 a linked
finding's ``link_probability`` (learned correspondence; written as 1.3 only when present), 1.4
each finding's ``location`` (clock face, region, depth, distance from the nipple); 1.0 to 1.3
files are read too. Reading builds the
typed result, so a file that breaks the contract is refused with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cad.io import atomic
from cad.result.model import (
    BOX_DIGITS,
    SCORE_DIGITS,
    Algorithm,
    BreastStatus,
    Finding,
    FindingLocation,
    FindingView,
    ImageStatus,
    ResultError,
    StudyResult,
)

SCHEMA_VERSION = "1.2"
#: a result with a finding linked by the learned correspondence (its ``link_probability``)
LINK_PROBABILITY_VERSION = "1.3"
#: a result whose findings carry their location
LOCATION_VERSION = "1.4"
#: versions :func:`result_from_dict` reads
READABLE_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4")
FINDINGS_FILE = "findings.json"
OPERATING_POINT_DESCRIPTION = ("findings scoring at or above the threshold are the CAD marks shown to readers; "
                               "lower-scoring findings are kept for FROC analysis")


def _image(image: ImageStatus) -> dict[str, Any]:
    out = {"sop_instance_uid": image.sop_instance_uid,
           "laterality": image.laterality.value if image.laterality else None,
           "view": image.view.value if image.view else None, "status": image.status.value,
           "reason": image.reason, "file": image.file}
    if image.error_code is not None:
        out["error_code"] = image.error_code
    return out


def _finding(finding: Finding) -> dict[str, Any]:
    out: dict[str, Any] = {
        "finding_id": finding.finding_id,
        "laterality": finding.laterality.value,
        "type": finding.type.value,
        "score": round(finding.score, SCORE_DIGITS),
        "linked": finding.linked,
        "link_cost": None if finding.link_cost is None else round(finding.link_cost, 4),
        "views": [{"sop_instance_uid": v.sop_instance_uid, "view": v.view.value,
                   "box": [round(c, BOX_DIGITS) for c in v.box], "score": round(v.score, SCORE_DIGITS)}
                  for v in finding.views],
    }
    if finding.link_probability is not None:  # schema 1.3: written only for a learned link
        out["link_probability"] = round(finding.link_probability, SCORE_DIGITS)
    if finding.location is not None:  # schema 1.4
        where = finding.location
        out["location"] = {"basis": where.basis, "nipple_distance_mm": round(where.nipple_distance_mm, 1),
                           "depth": where.depth, "clock": where.clock, "region": where.region}
    return out


def _location(data: dict[str, Any] | None) -> FindingLocation | None:
    if data is None:
        return None
    return FindingLocation(data["basis"], float(data["nipple_distance_mm"]), data.get("depth"), data.get("clock"),
                           data.get("region"))


def result_to_dict(result: StudyResult) -> dict[str, Any]:
    """The findings.json object of ``result``."""
    a = result.algorithm
    algorithm: dict[str, str | bool | None] = {"name": a.name, "version": a.version, "model_sha256": a.model_sha256,
                 "model_name": a.model_name, "settings_sha256": a.settings_sha256}
    if a.runtime_variant is not None:
        algorithm["runtime_variant"] = a.runtime_variant
    if not a.released:  # written only when false: released results keep their bytes
        algorithm["released"] = False
    learned = any(f.link_probability is not None for f in result.findings)
    located = any(f.location is not None for f in result.findings)
    return {
        # 1.3 only where it adds something: a released 0.3.0 result keeps its bytes
        "schema_version": LOCATION_VERSION if located else LINK_PROBABILITY_VERSION if learned else SCHEMA_VERSION,
        "study_instance_uid": result.study_instance_uid,
        "algorithm": algorithm,
        "operating_point": {"threshold": round(result.operating_threshold, SCORE_DIGITS),
                            "description": OPERATING_POINT_DESCRIPTION},
        "images": [_image(i) for i in result.images],
        "findings": [_finding(f) for f in result.findings],
        # schema 1.2: per-breast completeness against the 4-view screening protocol (RC-030)
        "breasts": [_breast(b) for b in result.breasts],
        "exam_complete": result.exam_complete,
    }


def _breast(breast: BreastStatus) -> dict[str, Any]:
    return {"laterality": breast.laterality.value, "status": breast.status.value,
            "views_analysed": [v.value for v in breast.views_analysed],
            "views_missing": [v.value for v in breast.views_missing]}


def result_to_json(result: StudyResult) -> str:
    return json.dumps(result_to_dict(result), indent=2, sort_keys=True) + "\n"


def write_result(result: StudyResult, path: Path) -> Path:
    """Write ``result`` as findings.json at ``path`` (whole or not at all)."""
    atomic.write_text(path, result_to_json(result))
    return path


def result_from_dict(data: dict[str, Any]) -> StudyResult:
    """The typed result of a findings.json object; ResultError when it is not one."""
    try:
        version = data["schema_version"]
        if version not in READABLE_VERSIONS:
            raise ResultError(f"schema_version {version!r} (this version reads {', '.join(READABLE_VERSIONS)})")
        alg = data["algorithm"]
        images = tuple(
            ImageStatus(i["sop_instance_uid"], i["laterality"], i["view"], i["status"], i.get("reason"),
                        i.get("file"), i.get("error_code"))
            for i in data["images"])
        findings = tuple(
            Finding(f["finding_id"], f["laterality"], f["type"], float(f["score"]),
                    tuple(FindingView(v["sop_instance_uid"], v["view"], tuple(v["box"]), float(v["score"]))
                          for v in f["views"]),
                    f.get("link_cost"), f.get("link_probability"), _location(f.get("location")))
            for f in data["findings"])
        result = StudyResult(
            data["study_instance_uid"],
            Algorithm(alg["name"], alg["version"], alg["model_sha256"], alg.get("model_name"),
                      alg.get("settings_sha256"), alg.get("runtime_variant"), alg.get("released", True)),
            float(data["operating_point"]["threshold"]), images, findings)
        if "breasts" in data and (data["breasts"] != [_breast(b) for b in result.breasts]
                                  or data.get("exam_complete") != result.exam_complete):
            raise ResultError("breasts / exam_complete disagree with the images' statuses")
        return result
    except ResultError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultError(f"not a findings.json object ({type(exc).__name__}: {exc})") from None


def read_result(path: Path) -> StudyResult:
    """findings.json at ``path`` as a typed result; ResultError naming the file otherwise."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ResultError(f"{path}: not readable JSON ({exc})") from None
    try:
        return result_from_dict(data)
    except ResultError as exc:
        raise ResultError(f"{path}: {exc}") from None

