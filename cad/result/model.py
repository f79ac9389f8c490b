"""The study result: what the locked core concluded about one study, as every output reports it.

Immutable and validated on construction: enum-typed laterality, view, status and lesion type;
boxes ordered and finite; scores in [0, 1]; a finding has one view, or one CC and one MLO view
of the same breast, each on an analysed image of the study. :attr:`StudyResult.marks` is the one
place the rule "a finding scoring at or above the operating threshold is a CAD mark" lives:
findings.json, the SR, the presentation state, overlays, the service and the command line all
ask it. The JSON form is :mod:`cad.result.findings_json`.

Wire spelling: status values are ``analyzed`` / ``not_analyzed`` (findings.json schema 1.x and
the DICOM outputs, which use US spelling); prose and code say "analysed".
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from cad.errors import UsageError
from cad.io.image import Laterality, View

SCORE_DIGITS = 6
BOX_DIGITS = 2
#: digits of a score or the operating threshold wherever a person reads it (console, overlays,
#: presentation state labels, dashboard, reports); the data (findings.json, SR parameters) keep
#: SCORE_DIGITS. Marks and threshold at the same precision: rounding keeps score >= threshold.
SHOWN_DIGITS = 3


def shown_score(value: float) -> str:
    """A score or the operating threshold as people read it: ``0.116``."""
    return f"{value:.{SHOWN_DIGITS}f}"
#: the views a finding may be seen on (a linked finding: one of each)
FINDING_VIEWS = (View.CC, View.MLO)


class ResultError(UsageError):
    """A study result that breaks the contract (a defect in whatever built it, or a findings.json
    that is not one)."""


class ImageState(str, enum.Enum):
    """Whether the locked core analysed an image."""

    ANALYZED = "analyzed"
    NOT_ANALYZED = "not_analyzed"


class FindingType(str, enum.Enum):
    """The lesion types the product detects."""

    MASS = "mass"


ANALYZED = ImageState.ANALYZED
NOT_ANALYZED = ImageState.NOT_ANALYZED
#: the one lesion type the product detects
FINDING_TYPE = FindingType.MASS


def _score(value: float, what: str) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ResultError(f"{what}: score {value!r} is not in [0, 1]")
    return float(value)


@dataclass(frozen=True)
class Algorithm:
    """Which locked algorithm produced the result (travels with every output)."""

    name: str
    version: str
    model_sha256: str
    model_name: str | None = None
    settings_sha256: str | None = None
    #: the runtime variant that ran when it is not the locked model's reference precision
    #: (``int8``, ``fp16``); None for the reference
    runtime_variant: str | None = None
    #: False when the model is not one this release was verified with (development mode, RC-002)
    released: bool = True

    def __post_init__(self) -> None:
        if not self.name or not self.version:
            raise ResultError("algorithm: name and version are required")
        if len(self.model_sha256) != 64 or any(c not in "0123456789abcdef" for c in self.model_sha256):
            raise ResultError(f"algorithm: model_sha256 {self.model_sha256!r} is not a SHA-256 hex digest")


class BreastState(str, enum.Enum):
    """How much of one breast the locked core analysed (RC-030)."""

    ANALYSED = "analysed"
    PARTIAL = "partially analysed"
    NOT_ANALYSED = "not analysed"
    ABSENT = "absent"


@dataclass(frozen=True)
class BreastStatus:
    """One breast of the study: its state, the screening views analysed and those missing."""

    laterality: Laterality
    status: BreastState
    views_analysed: tuple[View, ...]
    views_missing: tuple[View, ...]

    def describe(self) -> str:
        """One line for people: ``L: partially analysed (CC; MLO missing)``."""
        detail = "; ".join(filter(None, (", ".join(v.value for v in self.views_analysed),
                                         f"{', '.join(v.value for v in self.views_missing)} missing"
                                         if self.views_missing else "")))
        return f"{self.laterality.value}: {self.status.value} ({detail})"


@dataclass(frozen=True)
class ImageStatus:
    """One input image: analysed, or not analysed with the reason (and the ingest error code
    when ingest refused it)."""

    sop_instance_uid: str | None
    laterality: Laterality | None
    view: View | None
    status: ImageState
    reason: str | None = None
    file: str | None = None
    #: the ingest error code (:class:`cad.io.errors.IngestErrorCode` value) of a refused file
    error_code: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", ImageState(self.status))
        if self.laterality is not None:
            object.__setattr__(self, "laterality", Laterality(self.laterality))
        if self.view is not None:
            object.__setattr__(self, "view", View(self.view))
        name = self.file or self.sop_instance_uid or "image"
        if self.status is ImageState.ANALYZED:
            if self.reason is not None or self.error_code is not None:
                raise ResultError(f"{name}: an analysed image has no reason or error code")
            if not self.sop_instance_uid or self.laterality is None or self.view is None:
                raise ResultError(f"{name}: an analysed image needs its instance UID, laterality and view")
        elif not self.reason:
            raise ResultError(f"{name}: a not analysed image needs its reason")

    @property
    def analysed(self) -> bool:
        return self.status is ImageState.ANALYZED


def image_sort_key(image: ImageStatus) -> tuple[str, str, str, str]:
    """The order of images in a result: by laterality, view, instance, file."""
    return (image.laterality.value if image.laterality else "~", image.view.value if image.view else "~",
            image.sop_instance_uid or "", image.file or "")


@dataclass(frozen=True)
class FindingView:
    """A finding's box on one view, in original image pixels [x0, y0, x1, y1], and the score of
    that view alone."""

    sop_instance_uid: str
    view: View
    box: tuple[float, float, float, float]
    score: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "view", View(self.view))
        box = tuple(float(c) for c in self.box)
        if len(box) != 4 or not all(math.isfinite(c) for c in box) or box[0] > box[2] or box[1] > box[3]:
            raise ResultError(f"finding view on {self.view.value}: box {self.box!r} is not [x0, y0, x1, y1]")
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "score", _score(self.score, f"finding view on {self.view.value}"))
        if self.view not in FINDING_VIEWS:
            raise ResultError(f"finding view: {self.view.value} is not a CC or MLO view")


#: depth thirds and regions a finding's location may name (cad.analysis.location computes them)
DEPTHS = ("anterior", "middle", "posterior")
REGIONS = ("upper outer", "upper inner", "lower outer", "lower inner", "retroareolar", "central",
           "outer", "inner", "upper", "lower")
LOCATION_BASES = ("CC+MLO", "CC", "MLO")
#: the quadrants as a breast-imaging report abbreviates them
QUADRANT_ABBREVIATIONS = {"upper outer": "UOQ", "upper inner": "UIQ", "lower outer": "LOQ", "lower inner": "LIQ"}


@dataclass(frozen=True)
class FindingLocation:
    """Where a finding is, as a report names it; ``basis`` names the views it rests on (a
    single-view finding has no clock position and half a quadrant: outer/inner from CC,
    upper/lower from MLO)."""

    basis: str
    nipple_distance_mm: float
    depth: str | None = None
    clock: int | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if self.basis not in LOCATION_BASES:
            raise ResultError(f"finding location: basis {self.basis!r} is not one of {', '.join(LOCATION_BASES)}")
        distance = float(self.nipple_distance_mm)
        if not (math.isfinite(distance) and distance >= 0):
            raise ResultError(f"finding location: nipple distance {self.nipple_distance_mm!r} is not a distance")
        object.__setattr__(self, "nipple_distance_mm", distance)
        if self.depth is not None and self.depth not in DEPTHS:
            raise ResultError(f"finding location: depth {self.depth!r} is not one of {', '.join(DEPTHS)}")
        if self.region is not None and self.region not in REGIONS:
            raise ResultError(f"finding location: region {self.region!r} is not a region")
        if self.clock is not None and (int(self.clock) != self.clock or not 1 <= int(self.clock) <= 12
                                       or self.basis != "CC+MLO"):
            raise ResultError(f"finding location: clock {self.clock!r} (1-12, from both views only)")

    def label(self) -> str:
        """The short form a mark's label carries: "4 o'clock LIQ, 73 mm from nipple"."""
        region = QUADRANT_ABBREVIATIONS.get(self.region or "", self.region or "")
        where = " ".join(part for part in (f"{self.clock} o'clock" if self.clock else "", region) if part)
        return f"{where + ', ' if where else ''}{self.nipple_distance_mm:.0f} mm from nipple"


@dataclass(frozen=True)
class Finding:
    """A mass candidate: seen on one view, or linked across the CC and MLO views of one breast."""

    finding_id: str
    laterality: Laterality
    type: FindingType
    score: float
    views: tuple[FindingView, ...]
    link_cost: float | None = None
    #: a link made by the learned correspondence: the probability that both views show one lesion
    link_probability: float | None = None
    #: where it is (schema 1.4; None in results written before)
    location: FindingLocation | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "laterality", Laterality(self.laterality))
        object.__setattr__(self, "type", FindingType(self.type))
        object.__setattr__(self, "views", tuple(self.views))
        what = f"finding {self.finding_id or '(unnumbered)'}"
        object.__setattr__(self, "score", _score(self.score, what))
        if len(self.views) not in (1, 2):
            raise ResultError(f"{what}: {len(self.views)} views (one, or a linked CC and MLO)")
        if len(self.views) == 2 and {v.view for v in self.views} != set(FINDING_VIEWS):
            raise ResultError(f"{what}: a linked finding has one CC and one MLO view")
        if (self.link_cost is not None or self.link_probability is not None) and len(self.views) != 2:
            raise ResultError(f"{what}: only a linked finding has a link cost or probability")
        if self.link_probability is not None:
            object.__setattr__(self, "link_probability", _score(self.link_probability, f"{what} link probability"))
        if self.location is not None and set(self.location.basis.split("+")) != {v.view.value for v in self.views}:
            raise ResultError(f"{what}: its location rests on {self.location.basis}, its views are "
                              f"{'+'.join(v.view.value for v in self.views)}")

    @property
    def linked(self) -> bool:
        return len(self.views) == 2


@dataclass(frozen=True)
class StudyResult:
    """Everything the locked core concluded about one study."""

    study_instance_uid: str
    algorithm: Algorithm
    operating_threshold: float
    images: tuple[ImageStatus, ...]
    findings: tuple[Finding, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "findings", tuple(self.findings))
        _score(self.operating_threshold, "operating threshold")
        analysed = {i.sop_instance_uid: i for i in self.images if i.analysed}
        ids = [f.finding_id for f in self.findings]
        if len(set(ids)) != len(ids) or not all(ids):
            raise ResultError(f"study result: finding IDs must be present and unique ({ids})")
        for finding in self.findings:
            for view in finding.views:
                image = analysed.get(view.sop_instance_uid)
                if image is None:
                    raise ResultError(f"finding {finding.finding_id}: its {view.view.value} view is not an "
                                      "analysed image of the study")
                if image.laterality is not finding.laterality or image.view is not view.view:
                    raise ResultError(f"finding {finding.finding_id}: laterality or view differs from its image")

    @property
    def breasts(self) -> tuple[BreastStatus, BreastStatus]:
        """What was analysed of each breast, right then left, against the 4-view screening
        protocol (RC-030): a breast without an analysed CC and MLO is not fully analysed, and a
        breast with no image at all in the study is absent; neither may be read as "no marks"."""
        out = []
        for side in (Laterality.RIGHT, Laterality.LEFT):
            images = [i for i in self.images if i.laterality is side]
            analysed = tuple(v for v in FINDING_VIEWS if any(i.analysed and i.view is v for i in images))
            missing = tuple(v for v in FINDING_VIEWS if v not in analysed)
            status = (BreastState.ABSENT if not images else BreastState.NOT_ANALYSED if not analysed
                      else BreastState.PARTIAL if missing else BreastState.ANALYSED)
            out.append(BreastStatus(side, status, analysed, missing))
        return out[0], out[1]

    @property
    def exam_complete(self) -> bool:
        """Both breasts analysed on CC and MLO (the 4-view screening examination)."""
        return all(b.status is BreastState.ANALYSED for b in self.breasts)

    def is_mark(self, score: float) -> bool:
        """The CAD mark rule: a finding scoring at or above the operating threshold is shown to
        readers; lower-scoring findings are kept for FROC analysis only."""
        return score >= self.operating_threshold

    @property
    def marks(self) -> tuple[Finding, ...]:
        """The findings shown to readers, in result order (highest score first)."""
        return tuple(f for f in self.findings if self.is_mark(f.score))

    @property
    def images_analysed(self) -> int:
        return sum(image.analysed for image in self.images)
