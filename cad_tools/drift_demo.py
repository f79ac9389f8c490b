"""Output-drift demonstration: false alarms on an unchanged stream and the delay to detect a change.

`python -m cad_tools.drift_demo --reference DIR --shifted DIR [--runs 200]` reads the findings.json
of two `cad detect` runs on the same kind of exams (for example the released model and a
variant, or two sites), builds streams of studies by resampling them, and runs the service's
EWMA charts (:mod:`cad.service.drift`) on them as `cad serve` would: a site baseline of the first
500 studies, then ``--length`` unchanged studies (every alarm there is a false alarm), then
shifted studies until the first alarm (the detection delay). Prints and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from cad.result.findings_json import read_result
from cad.service import drift


def facts_of(folder: Path) -> list[drift.OutputFacts]:
    """Output facts of every findings.json under ``folder`` (processing time not charted: 0)."""
    return [drift.OutputFacts.of(read_result(path), 0.0) for path in sorted(folder.rglob("findings.json"))]


def first_alarm(values: list[float], reference: drift.Reference, lam: float = drift.LAMBDA,
                width: float = drift.WIDTH, batch: int = drift.BATCH) -> int | None:
    """How many studies it took until the chart of batch means left its limits (the study that
    completed the alarming batch), None if it never did."""
    for n, (z, lower, upper) in enumerate(drift.chart_path(drift.batch_means(values, batch), reference, lam, width),
                                          start=1):
        if not lower <= z <= upper:
            return n * batch
    return None


def demonstrate(reference: list[drift.OutputFacts], shifted: list[drift.OutputFacts], runs: int, length: int,
                seed: int, baseline: int = drift.BASELINE, lam: float = drift.LAMBDA,
                width: float = drift.WIDTH, batch: int = drift.BATCH,
                model: dict[str, drift.Reference] | None = None) -> dict[str, Any]:
    """False alarms and delays per fact; with ``model`` (the monitoring reference's per-study
    references) the charted facts are judged against it from the first study, as `cad serve`
    does with reference "model", and other facts are skipped."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"runs": runs, "baseline_studies": 0 if model else baseline, "unchanged_studies": length,
                           "lambda": lam, "width_sd": width, "batch": batch,
                           "reference": "model" if model else "site", "facts": {}}
    for name in drift.FACTS:
        if name == "seconds" or (model is not None and name not in model):
            continue
        ref_values = np.array([getattr(f, name) for f in reference])
        shift_values = np.array([getattr(f, name) for f in shifted])
        false_alarm_runs, delays = 0, []
        for _ in range(runs):
            if model is not None:
                chart_ref: drift.Reference | None = model[name].of_batch_means(batch)
            else:
                chart_ref = drift.batch_reference(list(rng.choice(ref_values, baseline)), batch)
            if chart_ref is None:
                continue
            if first_alarm(list(rng.choice(ref_values, length)), chart_ref, lam, width, batch) is not None:
                false_alarm_runs += 1
            delay = first_alarm(list(rng.choice(shift_values, 2000)), chart_ref, lam, width, batch)
            delays.append(delay if delay is not None else np.inf)
        finite = [d for d in delays if np.isfinite(d)]
        out["facts"][name] = {
            "reference_mean": round(float(ref_values.mean()), 4), "shifted_mean": round(float(shift_values.mean()), 4),
            "runs_with_a_false_alarm": false_alarm_runs, "false_alarm_fraction": round(false_alarm_runs / runs, 3),
            "detection_delay_median": float(np.median(delays)) if delays else None,
            "detection_delay_p90": float(np.percentile(delays, 90)) if delays else None,
            "detected_within_2000": round(len(finite) / len(delays), 3) if delays else None,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="findings of the unchanged population")
    parser.add_argument("--shifted", type=Path, required=True, help="findings of the changed population")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--length", type=int, default=500, help="unchanged studies per run after the baseline")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--model-reference", type=Path,
                        help="a model's monitoring-reference.json: chart against it instead of a site baseline")
    args = parser.parse_args(argv)
    model = None
    if args.model_reference:
        from cad.service.reference import parse_reference

        model = dict(parse_reference(json.loads(args.model_reference.read_text()), str(args.model_reference)).output)
    result = demonstrate(facts_of(args.reference), facts_of(args.shifted), args.runs, args.length, args.seed,
                         model=model)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
