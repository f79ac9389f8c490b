"""Model change control: a candidate model against the released one, under a protocol fixed in
advance (docs/change-protocol.yaml; FDA's predetermined change control plan asks for data,
endpoints, acceptance criteria and a report per change).

Both models are analysed on the same sequestered exams by :func:`verification.standalone.analyse`
with the same exam resamples (same count and seed), so resample *b* draws the same exams for
both and ``candidate - released`` of the replicates is the paired exam-level bootstrap of each
difference. An endpoint is non-inferior when the confidence bound on the worse side clears its
margin: for a "higher is better" endpoint the lower bound of the two-sided (1 - alpha) interval
of the difference is above the (negative) margin; for "lower is better" the upper bound is below
the (positive) margin. The candidate is accepted when every endpoint and every qualifying
subgroup stratum is non-inferior; an endpoint the data cannot estimate fails, never passes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cad.detect.manifest import known_keys
from cad.result.model import StudyResult
from verification import bootstrap as bs
from verification.standalone import Criteria, StandaloneAnalysis, analyse, as_truth
from verification.truth import Truth

ACCEPTED = "accepted"
REJECTED = "rejected"
ENDPOINT_METRICS = ("sensitivity_at_operating_point", "fpi_at_operating_point",
                    "per_lesion_sensitivity_at_operating_point", "afroc", "wafroc",
                    "link_recall_at_operating_point", "link_error_rate_at_operating_point")
BETTER = ("higher", "lower")


class ProtocolError(ValueError):
    """A protocol file that is not one this version applies."""


def _known(where: str, data: Any, known: set[str], required: set[str]) -> dict[str, Any]:
    return known_keys(where, data, known, required, ProtocolError)


@dataclass(frozen=True)
class TestSet:
    """A sequestered phantom set: regenerated from its seed, checked against its truth hash."""

    name: str
    seed: int
    exams: int
    spacing_mm: float
    truth_sha256: str | None


@dataclass(frozen=True)
class EndpointRule:
    id: str
    title: str
    metric: str
    better: str
    margin: float


@dataclass(frozen=True)
class Protocol:
    id: str
    version: str
    title: str
    test_sets: tuple[TestSet, ...]
    criteria: Criteria
    runtime: str
    resamples: int
    seed: int
    alpha: float
    endpoints: tuple[EndpointRule, ...]
    subgroup_groupings: tuple[str, ...]
    subgroup_margin: float
    subgroup_min_lesion_views: int
    sha256: str

    @property
    def level(self) -> float:
        return 1.0 - self.alpha


def load_protocol(path: Path) -> Protocol:
    """The protocol in ``path``; ProtocolError naming the problem (unknown keys are refused)."""
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ProtocolError(f"{path}: not a readable YAML file ({exc})") from None
    try:
        top = _known("protocol", data, {"id", "version", "title", "purpose", "test_data", "analysis", "endpoints",
                                        "subgroups", "decision"},
                     {"id", "version", "test_data", "analysis", "endpoints", "subgroups"})
        sets = []
        for k, item in enumerate(_known("test_data", top["test_data"], {"kind", "sets"}, {"kind", "sets"})["sets"]):
            entry = _known(f"test_data.sets[{k}]", item, {"name", "seed", "exams", "spacing_mm", "truth_sha256"},
                           {"name", "seed", "exams"})
            sets.append(TestSet(str(entry["name"]), int(entry["seed"]), int(entry["exams"]),
                                float(entry.get("spacing_mm", 0.2)), entry.get("truth_sha256")))
        if top["test_data"]["kind"] != "phantom":
            raise ProtocolError("test_data.kind: only 'phantom' sets are generated here; clinical sets need file hashes")
        analysis = _known("analysis", top["analysis"], {"lesion_types", "min_diameter_mm", "iou", "runtime",
                                                        "bootstrap", "alpha"}, {"bootstrap", "alpha"})
        boot = _known("analysis.bootstrap", analysis["bootstrap"], {"unit", "resamples", "seed", "paired"},
                      {"resamples", "seed"})
        alpha = float(analysis["alpha"])
        if not 0.0 < alpha < 0.5:
            raise ProtocolError(f"analysis.alpha {alpha} is not in (0, 0.5)")
        rules = []
        for k, item in enumerate(top["endpoints"]):
            entry = _known(f"endpoints[{k}]", item, {"id", "title", "metric", "better", "margin"},
                           {"id", "metric", "better", "margin"})
            if entry["metric"] not in ENDPOINT_METRICS:
                raise ProtocolError(f"endpoints[{k}].metric {entry['metric']!r}: use one of {', '.join(ENDPOINT_METRICS)}")
            if entry["better"] not in BETTER:
                raise ProtocolError(f"endpoints[{k}].better {entry['better']!r}: use higher or lower")
            margin = float(entry["margin"])
            if (entry["better"] == "higher" and margin > 0) or (entry["better"] == "lower" and margin < 0):
                raise ProtocolError(f"endpoints[{k}].margin {margin}: a non-inferiority margin points to the worse side")
            rules.append(EndpointRule(str(entry["id"]), str(entry.get("title", entry["metric"])), str(entry["metric"]),
                                      str(entry["better"]), margin))
        sub = _known("subgroups", top["subgroups"], {"groupings", "margin", "min_lesion_views", "metric"},
                     {"groupings", "margin", "min_lesion_views"})
        if float(sub["margin"]) > 0:
            raise ProtocolError("subgroups.margin: sensitivity is higher-is-better; the margin is negative or zero")
        return Protocol(
            id=str(top["id"]), version=str(top["version"]), title=str(top.get("title", top["id"])),
            test_sets=tuple(sets),
            criteria=Criteria(tuple(analysis.get("lesion_types", ["mass"])), float(analysis.get("min_diameter_mm", 8.0)),
                              analysis.get("iou")),
            runtime=str(analysis.get("runtime", "onnxruntime")), resamples=int(boot["resamples"]), seed=int(boot["seed"]),
            alpha=alpha, endpoints=tuple(rules), subgroup_groupings=tuple(str(g) for g in sub["groupings"]),
            subgroup_margin=float(sub["margin"]), subgroup_min_lesion_views=int(sub["min_lesion_views"]),
            sha256=hashlib.sha256(raw).hexdigest(),
        )
    except ProtocolError as exc:
        raise ProtocolError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"{path}: malformed protocol ({type(exc).__name__}: {exc})") from None


def _rounded(value: float, digits: int = 4) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def judge(rule_id: str, title: str, better: str, margin: float, released: float, candidate: float,
          difference_replicates: np.ndarray, level: float) -> dict[str, Any]:
    """One criterion: the paired difference with its interval and whether it clears the margin."""
    low, high = bs.percentile_ci(difference_replicates[:, None], level)
    low, high = float(low[0]), float(high[0])
    difference = candidate - released
    bound = low if better == "higher" else high
    defined = math.isfinite(difference) and math.isfinite(bound)
    passed = defined and (bound > margin if better == "higher" else bound < margin)
    return {
        "id": rule_id, "title": title, "better": better, "margin": margin,
        "released": _rounded(released), "candidate": _rounded(candidate), "difference": _rounded(difference),
        "ci": [_rounded(low), _rounded(high)], "bound_tested": _rounded(bound),
        "passed": bool(passed),
        "why": ("non-inferior" if passed else "not estimable on these data" if not defined
                else f"{'lower' if better == 'higher' else 'upper'} bound {bound:+.4f} does not clear margin {margin:+.4f}"),
    }


def compare(protocol: Protocol, truth: Truth | Mapping[str, Any], released: Mapping[str, StudyResult],
            candidate: Mapping[str, StudyResult]) -> tuple[dict[str, Any], StandaloneAnalysis, StandaloneAnalysis]:
    """Apply ``protocol`` to the two models' results on the same exams: the verdict (JSON
    content) and both analyses. ``truth``: parsed truth, or truth.json content (parsed once here)."""
    truth = as_truth(truth)
    a = analyse(truth, released, protocol.criteria, protocol.resamples, protocol.seed)
    b = analyse(truth, candidate, protocol.criteria, protocol.resamples, protocol.seed)
    criteria = []
    for rule in protocol.endpoints:
        ea, eb = a.endpoints[rule.metric], b.endpoints[rule.metric]
        criteria.append(judge(rule.id, rule.title, rule.better, rule.margin, ea.estimate, eb.estimate,
                              eb.replicates - ea.replicates, protocol.level))
    subgroups = []
    for key in sorted(a.endpoints):
        if not key.startswith("subgroup:"):
            continue
        _, grouping, stratum = key.split(":", 2)
        if grouping not in protocol.subgroup_groupings:
            continue
        ea, eb = a.endpoints[key], b.endpoints[key]
        entry = judge(f"S:{grouping}:{stratum}", f"sensitivity at the operating point, {grouping} = {stratum}",
                      "higher", protocol.subgroup_margin, ea.estimate, eb.estimate, eb.replicates - ea.replicates,
                      protocol.level)
        entry["lesion_views"] = ea.units
        entry["qualifies"] = ea.units >= protocol.subgroup_min_lesion_views
        if not entry["qualifies"]:
            entry["why"] = f"reported only: {ea.units} lesion views (< {protocol.subgroup_min_lesion_views})"
        subgroups.append(entry)
    failed = [c["id"] for c in criteria if not c["passed"]] + \
             [s["id"] for s in subgroups if s["qualifies"] and not s["passed"]]
    verdict = {
        "verdict": ACCEPTED if not failed else REJECTED,
        "failed_criteria": failed,
        "protocol": {"id": protocol.id, "version": protocol.version, "sha256": protocol.sha256},
        "released": a.metrics["device"], "candidate": b.metrics["device"],
        "data": {"exams": a.metrics["data"]["exams"], "images": a.metrics["data"]["images"],
                 "included_lesion_views": a.metrics["data"]["included_lesion_views"],
                 "sets": [{"name": s.name, "seed": s.seed, "exams": s.exams, "truth_sha256": s.truth_sha256}
                          for s in protocol.test_sets]},
        "bootstrap": {"unit": "exam", "paired": True, "resamples": protocol.resamples, "seed": protocol.seed,
                      "interval": f"{100 * protocol.level:g} % percentile"},
        "criteria": criteria,
        "subgroups": subgroups,
    }
    return verdict, a, b


def write_verdict(verdict: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(verdict, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path
