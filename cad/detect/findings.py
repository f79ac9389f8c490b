"""The findings model and its JSON form (findings.json, schema in cad/schemas).

Serialisation is canonical (sorted keys, fixed rounding, findings ordered by score then id),
so the same input gives byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.0"
ANALYZED = "analyzed"
NOT_ANALYZED = "not_analyzed"
#: the one lesion type the product detects
FINDING_TYPE = "mass"
SCORE_DIGITS = 6
BOX_DIGITS = 2


@dataclass(frozen=True)
class Algorithm:
    name: str
    version: str
    model_sha256: str
    model_name: str | None = None
    settings_sha256: str | None = None


@dataclass(frozen=True)
class ImageStatus:
    sop_instance_uid: str | None
    laterality: str | None
    view: str | None
    status: str
    reason: str | None = None
    file: str | None = None


def image_sort_key(image: ImageStatus) -> tuple[str, str, str, str]:
    """The order of images in findings.json: by laterality, view, instance, file."""
    return (image.laterality or "~", image.view or "~", image.sop_instance_uid or "", image.file or "")


@dataclass(frozen=True)
class FindingView:
    sop_instance_uid: str
    view: str
    box: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class Finding:
    finding_id: str
    laterality: str
    type: str
    score: float
    views: tuple[FindingView, ...]
    link_cost: float | None = None

    @property
    def linked(self) -> bool:
        return len(self.views) == 2


@dataclass
class StudyFindings:
    study_instance_uid: str
    algorithm: Algorithm
    operating_threshold: float
    images: list[ImageStatus] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "study_instance_uid": self.study_instance_uid,
            "algorithm": {
                "name": self.algorithm.name,
                "version": self.algorithm.version,
                "model_sha256": self.algorithm.model_sha256,
                "model_name": self.algorithm.model_name,
                "settings_sha256": self.algorithm.settings_sha256,
            },
            "operating_point": {
                "threshold": round(self.operating_threshold, SCORE_DIGITS),
                "description": "findings scoring at or above the threshold are the CAD marks shown "
                "to readers; lower-scoring findings are kept for FROC analysis",
            },
            "images": [
                {"sop_instance_uid": i.sop_instance_uid, "laterality": i.laterality, "view": i.view,
                 "status": i.status, "reason": i.reason, "file": i.file}
                for i in self.images
            ],
            "findings": [
                {
                    "finding_id": f.finding_id,
                    "laterality": f.laterality,
                    "type": f.type,
                    "score": round(f.score, SCORE_DIGITS),
                    "linked": f.linked,
                    "link_cost": None if f.link_cost is None else round(f.link_cost, 4),
                    "views": [
                        {"sop_instance_uid": v.sop_instance_uid, "view": v.view,
                         "box": [round(float(c), BOX_DIGITS) for c in v.box],
                         "score": round(v.score, SCORE_DIGITS)}
                        for v in f.views
                    ],
                }
                for f in self.findings
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path


def findings_from_dict(data: dict[str, Any]) -> StudyFindings:
    """Parse findings.json (the inverse of :meth:`StudyFindings.to_dict`)."""
    alg = data["algorithm"]
    out = StudyFindings(
        data["study_instance_uid"],
        Algorithm(alg["name"], alg["version"], alg["model_sha256"], alg.get("model_name"),
                  alg.get("settings_sha256")),
        float(data["operating_point"]["threshold"]),
    )
    out.images = [
        ImageStatus(i["sop_instance_uid"], i["laterality"], i["view"], i["status"], i.get("reason"), i.get("file"))
        for i in data["images"]
    ]
    out.findings = [
        Finding(
            f["finding_id"], f["laterality"], f["type"], float(f["score"]),
            tuple(FindingView(v["sop_instance_uid"], v["view"], tuple(v["box"]), float(v["score"]))
                  for v in f["views"]),
            f.get("link_cost"),
        )
        for f in data["findings"]
    ]
    return out
