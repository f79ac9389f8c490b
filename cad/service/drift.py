"""Output drift of `cad serve`: EWMA control charts of what the CAD outputs per study.

Each finished study contributes its output facts (:class:`OutputFacts`): CAD marks, whether it
has any, the highest finding score, the fraction of marks linked across CC and MLO, the fraction
of images not analysed and the processing time. Each fact has an exponentially weighted moving
average chart (Roberts 1959; Montgomery, *Statistical Quality Control*, ch. 9) of the means of
consecutive groups of :data:`BATCH` studies, whose centre and spread come from a reference: the
site's own first :data:`BASELINE` studies (the default), or given per fact. A chart outside its
limits raises an ``output-drift:<fact>`` alert; back inside, the alert resolves.

Written here rather than taken from a library: the chart is a few lines of arithmetic, and the
statistics packages that offer it (statsmodels and the like) would be large new device SOUP.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from cad.result.model import StudyResult
from cad.service.settings import OutputDriftSettings

#: EWMA weight of the newest point and the width of the limits in standard deviations, chosen
#: with `python -m cad_tools.drift_demo` for few false alarms on unchanged phantom streams
#: (docs/service.md, Output drift); a site sets its own in the monitoring settings
LAMBDA = OutputDriftSettings.ewma_lambda
WIDTH = OutputDriftSettings.width_sd
#: studies whose facts define the site baseline before any chart can alarm (a few days of screening)
BASELINE = OutputDriftSettings.baseline_studies
#: consecutive studies averaged into one chart point: per-study facts are counts, 0/1 and
#: fractions far from normal; means of 20 are close enough for normal-theory limits
BATCH = OutputDriftSettings.batch_studies
#: facts a chart needs to have at least this spread (a constant baseline cannot be charted)
MIN_SD = 1e-6


@dataclass(frozen=True)
class OutputFacts:
    """What one study's CAD output looks like, as numbers a chart can follow."""

    marks: float
    any_mark: float
    max_score: float
    linked_fraction: float
    not_analysed_fraction: float
    seconds: float

    @classmethod
    def of(cls, result: StudyResult, seconds: float) -> OutputFacts:
        marks = result.marks
        images = len(result.images)
        return cls(
            marks=float(len(marks)), any_mark=float(bool(marks)),
            max_score=max((f.score for f in result.findings), default=0.0),
            linked_fraction=sum(f.linked for f in marks) / len(marks) if marks else 0.0,
            not_analysed_fraction=sum(not i.analysed for i in result.images) / images if images else 1.0,
            seconds=float(seconds),
        )


FACTS = tuple(f.name for f in fields(OutputFacts))


@dataclass(frozen=True)
class Reference:
    """Centre and standard deviation of one fact in an unchanged population."""

    mean: float
    sd: float

    def of_batch_means(self, batch: int) -> Reference:
        """The reference of means of ``batch`` studies, from this per-study one (sd / sqrt(batch))."""
        return Reference(self.mean, self.sd / math.sqrt(batch))


@dataclass(frozen=True)
class ChartState:
    """Where one fact's chart stands after the latest study."""

    fact: str
    studies: int
    ewma: float | None
    lower: float | None
    upper: float | None
    reference: Reference | None

    @property
    def out_of_control(self) -> bool:
        return (self.ewma is not None and self.lower is not None and self.upper is not None
                and not self.lower <= self.ewma <= self.upper)


def marks_by_side(result: StudyResult) -> dict[str, int]:
    """CAD marks per breast ("R", "L"): what performance against outcomes matches to a cancer's side."""
    sides: dict[str, int] = {}
    for finding in result.marks:
        sides[finding.laterality.value] = sides.get(finding.laterality.value, 0) + 1
    return sides


def record(connection: sqlite3.Connection, job_id: int, study_uid: str, finished: float, facts: OutputFacts,
           sides: dict[str, int] | None = None) -> None:
    """Store one finished study's facts and its marks per breast."""
    connection.execute("INSERT OR REPLACE INTO study_facts (job_id, study_uid, finished, facts, sides) "
                       "VALUES (?, ?, ?, ?, ?)", (job_id, study_uid, finished, json.dumps(asdict(facts), sort_keys=True),
                                                  json.dumps(sides or {}, sort_keys=True)))


#: studies after the baseline that a chart is computed over: the EWMA forgets older groups (the
#: start's weight after 100 groups of 20 is 0.9**100, about 3e-5), and each check stays bounded
RECENT = 2000


def history(connection: sqlite3.Connection, baseline: int = BASELINE, recent: int = RECENT) -> list[OutputFacts]:
    """The site's first ``baseline`` studies' facts, then those of the latest ``recent`` studies
    after them, oldest first: two bounded queries however long the site has run."""
    first = connection.execute("SELECT job_id, facts FROM study_facts ORDER BY finished, job_id LIMIT ?",
                               (baseline,)).fetchall()
    seen = {r["job_id"] for r in first}
    latest = connection.execute("SELECT job_id, facts FROM study_facts ORDER BY finished DESC, job_id DESC LIMIT ?",
                                (recent,)).fetchall()
    rows = first + [r for r in reversed(latest) if r["job_id"] not in seen]
    return [OutputFacts(**json.loads(r["facts"])) for r in rows]


def reference_of(values: Sequence[float]) -> Reference | None:
    """The mean and standard deviation of ``values`` (None when they do not vary)."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return Reference(mean, sd) if sd > MIN_SD else None


def batch_means(values: Sequence[float], batch: int = BATCH) -> list[float]:
    """Means of consecutive, complete groups of ``batch`` values (a last partial group waits)."""
    return [sum(values[k:k + batch]) / batch for k in range(0, len(values) - batch + 1, batch)]


def batch_reference(values: Sequence[float], batch: int = BATCH) -> Reference | None:
    """The reference of batch means from per-study baseline values (sd shrinks by sqrt(batch))."""
    per_study = reference_of(values)
    return per_study.of_batch_means(batch) if per_study else None


def chart_path(values: Sequence[float], reference: Reference, lam: float = LAMBDA,
               width: float = WIDTH) -> list[tuple[float, float, float]]:
    """The chart after each value: (ewma, lower, upper) per study, for plots and run lengths."""
    path = []
    z = reference.mean
    for n, value in enumerate(values, start=1):
        z = lam * value + (1 - lam) * z
        half = width * reference.sd * math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * n)))
        path.append((z, reference.mean - half, reference.mean + half))
    return path


@dataclass(frozen=True)
class ChartSeries:
    """One fact's whole chart over the service's recent history (what the dashboard draws and
    the alert judges): the reference of batch means, the batch means and the EWMA path."""

    fact: str
    studies: int
    #: studies still missing from the site baseline before the chart starts (0: charting)
    baseline_needed: int
    reference: Reference | None
    means: tuple[float, ...] = ()
    path: tuple[tuple[float, float, float], ...] = ()
    #: whether the reference is the model's validation set (else the site's first studies)
    from_model: bool = False

    def state(self) -> ChartState:
        ewma, lower, upper = self.path[-1] if self.path else (None, None, None)
        return ChartState(self.fact, self.studies, ewma, lower, upper, self.reference)


def series(facts: Sequence[OutputFacts], settings: OutputDriftSettings | None = None,
           references: Mapping[str, Reference] | None = None,
           latest: Sequence[OutputFacts] | None = None) -> list[ChartSeries]:
    """Every fact's chart: against the model's per-study ``references`` where given (charting
    ``latest``, or all ``facts``), else against the first ``baseline_studies`` of ``facts``
    (which are then not charted themselves)."""
    settings = settings or OutputDriftSettings()
    batch, baseline = settings.batch_studies, settings.baseline_studies
    references = references or {}
    out = []
    for name in FACTS:
        given = references.get(name)
        if given is not None:
            values = [getattr(f, name) for f in (facts if latest is None else latest)]
            reference: Reference | None = given.of_batch_means(batch)
        else:
            values = [getattr(f, name) for f in facts]
            if len(values) < baseline:
                out.append(ChartSeries(name, len(values), baseline - len(values), None))
                continue
            reference, values = batch_reference(values[:baseline], batch), values[baseline:]
        means = batch_means(values, batch)
        path = chart_path(means, reference, settings.ewma_lambda, settings.width_sd) if reference else []
        out.append(ChartSeries(name, len(values), 0, reference, tuple(means), tuple(path), given is not None))
    return out


def chart_states(facts: Sequence[OutputFacts], baseline: int = BASELINE, batch: int = BATCH,
                 references: Mapping[str, Reference] | None = None) -> list[ChartState]:
    """Where every fact's chart over ``facts`` stands after the last study (see :func:`series`)."""
    settings = OutputDriftSettings(baseline_studies=baseline, batch_studies=batch)
    return [s.state() for s in series(facts, settings, references)]


def charts(connection: sqlite3.Connection, settings: OutputDriftSettings | None = None,
           references: Mapping[str, Reference] | None = None, recent: int = RECENT) -> list[ChartSeries]:
    """Every fact's chart over the service's history: the model's references chart the latest
    ``recent`` studies; the site baseline is the first ``baseline_studies`` (bounded queries)."""
    settings = settings or OutputDriftSettings()
    site = history(connection, settings.baseline_studies, recent) if set(FACTS) - set(references or {}) else []
    return series(site, settings, references, history(connection, 0, recent) if references else None)


def summary(states: Sequence[ChartState]) -> dict[str, Any]:
    """The charts as the API and the dashboard show them."""
    return {s.fact: {"studies": s.studies, "ewma": s.ewma, "lower": s.lower, "upper": s.upper,
                     "reference": asdict(s.reference) if s.reference else None,
                     "out_of_control": s.out_of_control} for s in states}
