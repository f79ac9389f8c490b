"""Lesion ground truth (truth.json, cad/schemas/truth.schema.json) as typed, frozen records.

:func:`parse_truth` is the one place where truth data becomes :class:`Truth`: it checks what the
evaluation uses (required keys, their types and allowed values) and raises one
:class:`TruthError` naming the source and where the problem is. Everything after it reads
attributes, never string keys.

Versions: the schema has no version switch. Schema 1.1 (phantoms) added the optional per-view
``detectability`` record; 1.0 files and converted datasets lack it, and may lack the other
optional keys (``density``, ``shape``, ``seed``, ``generator``, ``schema_version``, image
``rows``/``columns``/``pixel_spacing_mm``): all of them load, absent (or null) read as None.
Image ``landmarks`` are not carried (the evaluation does not use them; the schema checks them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from cad.io.image import Laterality, View

#: lesion types, mass shapes and breast density categories the schema allows
LESION_TYPES = ("mass", "calcification_cluster")
MASS_SHAPES = ("round", "oval", "irregular", "spiculated")
DENSITIES = ("A", "B", "C", "D")
#: the views truth describes (CC and MLO; the schema allows no other)
TRUTH_VIEWS = (View.CC, View.MLO)

#: [x0, y0, x1, y1] in original image pixels (column, row), x1/y1 exclusive
Box = tuple[int, int, int, int]


class TruthError(ValueError):
    """Truth data the evaluation cannot use; the message names the source and the place."""


@dataclass(frozen=True)
class DetectabilityRank:
    """Rank of the lesion's response among the view's local maxima, per matched filter."""

    raw: int
    zero_mean: int
    prewhitened: int


@dataclass(frozen=True)
class Detectability:
    """How findable a lesion view is from its exact signal (truth schema 1.1, docs/phantom.md)."""

    definition: str
    snr: float
    rank: DetectabilityRank
    visible: bool


@dataclass(frozen=True)
class LesionView:
    """A lesion as it appears in one image."""

    sop_instance_uid: str
    view: View
    box: Box
    detectability: Detectability | None = None  # None: not recorded (schema 1.0, converted datasets)


@dataclass(frozen=True)
class LesionPosition:
    """Where a lesion's centre is in the breast (phantom truth schema 1.2): breast frame in mm
    (chest wall to nipple, medial - to lateral +, inferior - to superior +), its distance from
    the nipple, its depth behind the nipple as a fraction of the breast's depth, and its
    clock-face hour seen facing the patient."""

    chest_wall_mm: float
    lateral_mm: float
    superior_mm: float
    nipple_distance_mm: float
    depth_fraction: float
    clock: int

    @property
    def quadrant(self) -> str:
        return f"{'upper' if self.superior_mm >= 0 else 'lower'} {'outer' if self.lateral_mm >= 0 else 'inner'}"


@dataclass(frozen=True)
class Lesion:
    """A lesion in the breast; the same ``lesion_id`` in two views is the CC/MLO linking truth."""

    lesion_id: str
    type: str  # one of LESION_TYPES
    diameter_mm: float
    laterality: Laterality
    views: tuple[LesionView, ...]
    shape: str | None = None  # one of MASS_SHAPES, None when not recorded
    position: LesionPosition | None = None  # None in truth files before schema 1.2


@dataclass(frozen=True)
class TruthImage:
    """One image of an exam."""

    path: str
    sop_instance_uid: str
    laterality: Laterality
    view: View
    rows: int | None = None
    columns: int | None = None
    pixel_spacing_mm: float | None = None


@dataclass(frozen=True)
class TruthExam:
    """One screening exam: its images and its lesions (none for a normal exam)."""

    study_instance_uid: str
    images: tuple[TruthImage, ...]
    lesions: tuple[Lesion, ...]
    density: str | None = None  # one of DENSITIES, None when not recorded


@dataclass(frozen=True)
class Truth:
    """A truth.json: the exams and where they come from."""

    exams: tuple[TruthExam, ...]
    schema_version: str | None = None
    generator: str | None = None
    seed: int | None = None
    pixel_spacing_mm: float | None = None


def parse_truth(data: object, source: str | Path = "truth data") -> Truth:
    """``data`` (truth.json content) as :class:`Truth`; :class:`TruthError` naming ``source``
    (the file) and the offending place, e.g. ``exams/3/lesions/0: missing required key
    'diameter_mm'``, when it is not what the evaluation needs."""
    return _Parser(str(source)).truth(data)


def _kind(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


Where = tuple[str | int, ...]


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: Where, problem: str) -> NoReturn:
        at = "/".join(str(p) for p in where) or "(top level)"
        raise TruthError(f"{self.source}: invalid at {at}: {problem}")

    # ---- values ----

    def obj(self, value: object, where: Where) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(where, f"expected an object, got {_kind(value)}")
        return value

    def required(self, obj: Mapping[str, Any], key: str, where: Where) -> Any:
        if key not in obj:
            self.fail(where, f"missing required key {key!r}")
        return obj[key]

    def array(self, value: object, where: Where, min_items: int = 0) -> list[Any]:
        if not isinstance(value, list | tuple):
            self.fail(where, f"expected an array, got {_kind(value)}")
        if len(value) < min_items:
            self.fail(where, f"expected at least {min_items} item(s), got {len(value)}")
        return list(value)

    def string(self, value: object, where: Where) -> str:
        if not isinstance(value, str) or not value:
            self.fail(where, f"expected a non-empty string, got {_kind(value)}")
        return value

    def choice(self, value: object, options: tuple[str, ...], where: Where) -> str:
        if not isinstance(value, str) or value not in options:
            self.fail(where, f"expected one of {', '.join(options)}, got {_kind(value)}")
        return value

    def number(self, value: object, where: Where, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(where, f"expected a number, got {_kind(value)}")
        if positive and value <= 0:
            self.fail(where, f"expected a number > 0, got {value!r}")
        return float(value)

    def integer(self, value: object, where: Where, minimum: int | None = None) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON Schema counts 3.0 as an integer
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            self.fail(where, f"expected an integer >= {minimum}, got {value}")
        return value

    def boolean(self, value: object, where: Where) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {_kind(value)}")
        return value

    def laterality(self, value: object, where: Where) -> Laterality:
        return Laterality(self.choice(value, tuple(s.value for s in Laterality), where))

    def view(self, value: object, where: Where) -> View:
        return View(self.choice(value, tuple(v.value for v in TRUTH_VIEWS), where))

    # ---- records ----

    def truth(self, data: object) -> Truth:
        top = self.obj(data, ())
        exams = self.array(self.required(top, "exams", ()), ("exams",))
        version, generator, seed, spacing = (top.get(k) for k in ("schema_version", "generator", "seed",
                                                                 "pixel_spacing_mm"))
        return Truth(
            exams=tuple(self.exam(e, ("exams", k)) for k, e in enumerate(exams)),
            schema_version=None if version is None else self.string(version, ("schema_version",)),
            generator=None if generator is None else self.string(generator, ("generator",)),
            seed=None if seed is None else self.integer(seed, ("seed",)),
            pixel_spacing_mm=None if spacing is None else self.number(spacing, ("pixel_spacing_mm",), positive=True),
        )

    def exam(self, data: object, where: Where) -> TruthExam:
        exam = self.obj(data, where)
        images = self.array(self.required(exam, "images", where), (*where, "images"))
        lesions = self.array(self.required(exam, "lesions", where), (*where, "lesions"))
        density = exam.get("density")
        return TruthExam(
            study_instance_uid=self.string(self.required(exam, "study_instance_uid", where),
                                           (*where, "study_instance_uid")),
            images=tuple(self.image(im, (*where, "images", k)) for k, im in enumerate(images)),
            lesions=tuple(self.lesion(lesion, (*where, "lesions", k)) for k, lesion in enumerate(lesions)),
            density=None if density is None else self.choice(density, DENSITIES, (*where, "density")),
        )

    def image(self, data: object, where: Where) -> TruthImage:
        image = self.obj(data, where)

        def field(key: str) -> Any:
            return self.required(image, key, where)

        rows, columns, spacing = (image.get(k) for k in ("rows", "columns", "pixel_spacing_mm"))
        return TruthImage(
            path=self.string(field("path"), (*where, "path")),
            sop_instance_uid=self.string(field("sop_instance_uid"), (*where, "sop_instance_uid")),
            laterality=self.laterality(field("laterality"), (*where, "laterality")),
            view=self.view(field("view"), (*where, "view")),
            rows=None if rows is None else self.integer(rows, (*where, "rows"), minimum=1),
            columns=None if columns is None else self.integer(columns, (*where, "columns"), minimum=1),
            pixel_spacing_mm=None if spacing is None else self.number(spacing, (*where, "pixel_spacing_mm"),
                                                                      positive=True),
        )

    def lesion(self, data: object, where: Where) -> Lesion:
        lesion = self.obj(data, where)

        def field(key: str) -> Any:
            return self.required(lesion, key, where)

        views = self.array(field("views"), (*where, "views"), min_items=1)
        shape = lesion.get("shape")
        position = lesion.get("position")
        return Lesion(
            lesion_id=self.string(field("lesion_id"), (*where, "lesion_id")),
            type=self.choice(field("type"), LESION_TYPES, (*where, "type")),
            diameter_mm=self.number(field("diameter_mm"), (*where, "diameter_mm"), positive=True),
            laterality=self.laterality(field("laterality"), (*where, "laterality")),
            views=tuple(self.lesion_view(v, (*where, "views", k)) for k, v in enumerate(views)),
            shape=None if shape is None else self.choice(shape, MASS_SHAPES, (*where, "shape")),
            position=None if position is None else self.position(position, (*where, "position")),
        )

    def position(self, data: object, where: Where) -> LesionPosition:
        record = self.obj(data, where)

        def number(key: str) -> float:
            return self.number(self.required(record, key, where), (*where, key))

        clock = self.integer(self.required(record, "clock", where), (*where, "clock"), minimum=1)
        if clock > 12:
            self.fail((*where, "clock"), f"expected an hour 1-12, got {clock}")
        return LesionPosition(number("chest_wall_mm"), number("lateral_mm"), number("superior_mm"),
                              number("nipple_distance_mm"), number("depth_fraction"), clock)

    def lesion_view(self, data: object, where: Where) -> LesionView:
        view = self.obj(data, where)
        box = self.array(self.required(view, "box", where), (*where, "box"))
        if len(box) != 4:
            self.fail((*where, "box"), f"expected [x0, y0, x1, y1], got {len(box)} value(s)")
        x0, y0, x1, y1 = (self.integer(c, (*where, "box", k), minimum=0) for k, c in enumerate(box))
        record = view.get("detectability")
        return LesionView(
            sop_instance_uid=self.string(self.required(view, "sop_instance_uid", where), (*where, "sop_instance_uid")),
            view=self.view(self.required(view, "view", where), (*where, "view")),
            box=(x0, y0, x1, y1),
            detectability=None if record is None else self.detectability(record, (*where, "detectability")),
        )

    def detectability(self, data: object, where: Where) -> Detectability:
        record = self.obj(data, where)
        rank = self.obj(self.required(record, "rank", where), (*where, "rank"))
        return Detectability(
            definition=self.string(self.required(record, "definition", where), (*where, "definition")),
            snr=self.number(self.required(record, "snr", where), (*where, "snr")),
            rank=DetectabilityRank(*(self.integer(self.required(rank, k, (*where, "rank")), (*where, "rank", k),
                                                  minimum=1) for k in ("raw", "zero_mean", "prewhitened"))),
            visible=self.boolean(self.required(record, "visible", where), (*where, "visible")),
        )
