"""The development and QA verbs of the `cad` command: phantom, train, bench, evaluate,
reader-study, trace.

They are tooling, not device software: the device's command line (:mod:`cad.cli`) never imports
them; it finds this module through the ``cad.commands`` entry point and registers these verbs
only where the development distribution (``pip install mammo-cad-dev``) is installed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cad.cli import (
    EXIT_MODEL,
    EXIT_NOTHING_ANALYSED,
    EXIT_USAGE,
    ModelOption,
    console,
    err,
    output_file_option,
    output_folder_option,
    require_existing,
    verified_model,
)

#: what the tooling verbs need beyond the device (the mammo-cad-dev distribution)
TOOLING_MODULES = ("matplotlib", "openpyxl", "jsonschema")


def register(app: typer.Typer) -> None:
    """Add the tooling verbs to ``app``, if the development distribution is installed."""
    for name in TOOLING_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return
        except (ImportError, ValueError):  # ValueError: blocked (None in sys.modules)
            return
    for verb in (phantom, train, bench, evaluate, trace):
        app.command()(verb)
    app.command("reader-study")(reader_study)
    app.command("monitoring-reference")(monitoring_reference)
    release_app = typer.Typer(help="Model change control under the pre-specified protocol.", no_args_is_help=True,
                           rich_markup_mode=None)
    release_app.command("compare")(release_compare)
    app.add_typer(release_app, name="release")


def monitoring_reference(
    data: Annotated[Path, typer.Argument(help="The model's validation exams (DICOM), e.g. build/phantoms/val-cal.")],
    model: ModelOption = None,
) -> None:
    """Compute the monitoring reference of a locked model on its validation exams and record it
    beside the model (monitoring-reference.json, named with its SHA-256 in manifest.json): what
    `cad serve` compares a site's outputs and inputs with. The settings hash is unchanged."""
    from cad_tools.monitoring_reference import write_for_model

    require_existing([data])
    locked = verified_model(model, released_only=False)  # tooling evaluates models before their release
    entry = write_for_model(locked, data)
    console.print(f"monitoring reference: {locked.path / entry['file']} ({entry['studies']} studies, "
                  f"{entry['images']} images, sha256 {entry['sha256'][:16]}…)")


def phantom(
    out: Annotated[Path, output_folder_option("Output folder (DICOM files + truth.json).")],
    exams: Annotated[int, typer.Option("--exams", min=1, help="Number of 4-view exams.")] = 1,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Random seed (same seed, same files).")] = 0,
    spacing: Annotated[
        float, typer.Option("--spacing", min=0.05, max=1.0, help="Detector pixel spacing in mm.")
    ] = 0.2,
    bits: Annotated[int, typer.Option("--bits", min=12, max=14, help="BitsStored (12-14).")] = 12,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Parallel processes (same output at any count).")
    ] = 1,
) -> None:
    """Generate synthetic dual-view screening exams (MG DICOM) with lesion ground truth."""
    from cad_tools.phantom.generate import PhantomConfig, generate

    run = generate(
        out, exams, seed, PhantomConfig(spacing_mm=spacing, bits_stored=bits), workers=workers
    )
    lesions = sum(len(e["lesions"]) for e in run.truth["exams"])
    console.print(
        f"wrote {exams} exam(s), {run.images} images, {lesions} lesion(s) to {out} "
        f"({run.images_per_second:.2f} images/s); truth: {out / 'truth.json'}"
    )


def bench(
    inputs: Annotated[list[Path], typer.Argument(help="Folder(s) of DICOM exams to time (4-view exams).")],
    json_out: Annotated[Path, output_file_option("Write the measurements here (JSON).", "--json")],
    runtimes: Annotated[str, typer.Option(
        "--runtimes", help="Comma-separated runtimes to time; those that cannot run here are listed as unavailable.")
    ] = "torch,onnxruntime,tensorrt",
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed passes over the exams.")] = 3,
    max_exams: Annotated[int, typer.Option("--exams", min=1, help="Exams timed per input folder.")] = 4,
    size_input: Annotated[list[Path] | None, typer.Option(
        "--size-input", help="Another exam folder (e.g. other pixel spacing) to show how time grows with image size.")
    ] = None,
    cold: Annotated[bool, typer.Option("--cold-start/--no-cold-start", help="Also time `cad detect` in a fresh process.")
                    ] = True,
    model: ModelOption = None,
    baseline_model: Annotated[Path | None, typer.Option(
        "--baseline-model", help="Another locked model (e.g. the previous release) timed in the same turns; "
                                 "the exam-time ratio is reported.")] = None,
    site_python: Annotated[str | None, typer.Option(
        "--site-python", help="The python of a site install (a venv of `pip install mammo-cad`): its cold start "
                              "is timed too.")] = None,
) -> None:
    """Benchmark (not a test): model stage per view, warm end-to-end exam latency p50/p95,
    throughput and stage times for each runtime, batch scaling, cold start, peak memory and
    installed size per runtime, image size."""
    from cad.detect.locked import ModelIntegrityError
    from cad.detect.runtime import RuntimeName, RuntimeUnavailableError
    from cad_tools.bench import run_bench

    names = [n.strip() for n in runtimes.split(",") if n.strip()]
    unknown = [n for n in names if n not in {r.value for r in RuntimeName}]
    if unknown or not names:
        err.print(f"error: --runtimes {runtimes}: use a comma-separated subset of torch, onnxruntime, tensorrt")
        raise typer.Exit(EXIT_USAGE)
    require_existing(inputs + list(size_input or []))
    locked = verified_model(model, released_only=False)  # tooling evaluates models before their release
    baseline = verified_model(baseline_model, released_only=False) if baseline_model is not None else None
    try:
        result = run_bench(inputs, locked, names, repeats, max_exams, list(size_input or []), cold, baseline,
                           site_python)
    except ModelIntegrityError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_MODEL) from None
    except (ValueError, RuntimeUnavailableError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    table = Table(title=f"cad bench: {result['machine']['cpu']}, {result['machine']['torch_threads']} threads")
    for column in ("runtime", "model s/view", "exam p50 s", "exam p95 s", "exams/min", "non-model share",
                   "cold start s", "peak MB", "installed MB"):
        table.add_column(column)
    for name, row in result["runtimes"].items():
        if row.get("available") is False:
            table.add_row(name, "unavailable: " + row["reason"], "", "", "", "", "", "", "")
            continue
        started = row.get("cold_start", {})
        table.add_row(name, f"{row['model_s_per_view']:.3f}", f"{row['exam_latency_p50_s']:.3f}",
                      f"{row['exam_latency_p95_s']:.3f}", f"{row['exams_per_min']:.1f}",
                      f"{row['non_model_fraction']:.0%}",
                      f"{started['total_s']:.2f}" if "total_s" in started else ("refused" if started else "-"),
                      f"{started['peak_rss_mb']:.0f}" if started.get("peak_rss_mb") else "-",
                      f"{row['installed']['mb']:.0f}")
    console.print(table)
    if baseline is not None:
        ratios = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in result["baseline"]["exam_time_ratio"].items())
        console.print(f"exam time against {baseline.name} ({baseline.sha256[:12]}): {ratios}")
    console.print(f"measurements: {json_out}")


def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="truth.json (phantom or converted dataset).")],
    findings: Annotated[Path, typer.Option("--findings", help="`cad detect` output folder.")],
    out: Annotated[Path, output_folder_option("Report folder: metrics.json, operating_points.csv, plots, report.html.")],
    min_diameter: Annotated[float, typer.Option("--min-diameter-mm", help="Smallest lesion counted.")] = 8.0,
    iou: Annotated[
        float | None, typer.Option("--iou", help="Localise by IoU >= this instead of centre-in-box.")
    ] = None,
    lesion_types: Annotated[
        list[str] | None, typer.Option("--lesion-type", help="Truth lesion type analysed (repeatable; default mass).")
    ] = None,
    n_bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=1000, help="Exam-level bootstrap resamples for the 95 % CIs.")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Bootstrap seed (same seed, same intervals).")] = 20260505,
) -> None:
    """Standalone performance: FROC, AFROC/wAFROC, case/breast ROC with bootstrap CIs, subgroups, linking."""
    import shlex

    from verification.standalone import Criteria, EvaluationInputError, analyse, load_findings, load_truth
    from verification.standalone_report import write_outputs

    require_existing([truth, findings])
    try:
        truth_data = load_truth(truth)
        found = load_findings(findings)
        if not found:
            raise EvaluationInputError(f"{findings}: no findings.json below this folder")
        criteria = Criteria(tuple(lesion_types or ("mass",)), min_diameter, iou)
        analysis = analyse(truth_data, found, criteria, n_resamples=n_bootstrap, seed=seed)
    except EvaluationInputError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    metrics = analysis.metrics
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n")
    write_outputs(analysis, out, shlex.join(["cad", *sys.argv[1:]]))
    table = Table(title=f"Lesion sensitivity ({metrics['data']['included_lesion_views']} lesion views, "
                        f"{metrics['data']['images']} images)")
    table.add_column("FP per image")
    for column in ("dual-view", "single-view", "gain"):
        table.add_column(column, justify="right")
    for f, value in metrics["dual_view"]["sensitivity_at_fpi"].items():
        table.add_row(f, f"{value:.3f}", f"{metrics['single_view']['sensitivity_at_fpi'][f]:.3f}",
                      f"{metrics['fusion_gain'][f]:+.3f}")
    console.print(table)
    link = metrics["linking"]
    op = metrics["operating_point"]
    console.print(f"locked operating point {op['locked_threshold']:.3f}: sensitivity {op['sensitivity']:.3f} "
                  f"at {op['fpi']:.3f} FP/image")
    console.print(
        f"linking at the operating point: recall {link['link_recall']} "
        f"({link['of_which_linked_as_one_finding']}/{link['lesions_detected_in_both_views']}), "
        f"error rate {link['link_error_rate']} "
        f"({link['linked_findings_joining_different_lesions_or_a_false_mark']}/{link['linked_findings']})"
    )
    console.print(
        f"AFROC {metrics['afroc']['estimate']} {metrics['afroc']['ci95']}, wAFROC {metrics['wafroc']['estimate']} "
        f"{metrics['wafroc']['ci95']}, case AUC {metrics['roc']['case']['estimate']} {metrics['roc']['case']['ci95']} "
        f"(95 % CI, {n_bootstrap} exam resamples, seed {seed}, {metrics['bootstrap']['seconds']:.2f} s)"
    )
    console.print(f"metrics: {out / 'metrics.json'}; report: {out / 'report.html'}")


def train(
    config: Annotated[Path, typer.Option("--config", help="Training recipe (YAML).")],
    out: Annotated[Path | None, output_folder_option("Run folder (default: runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's checkpoint.")] = False,
) -> None:
    """Train the detector on phantom or public-dataset images, or (a recipe with `stage: second`)
    the second stage on a locked first stage's candidates (development tool)."""
    import yaml

    from cad.detect.locked import ModelIntegrityError
    from cad_tools.training.datasets import DatasetError
    from cad_tools.training.train import train as run_training

    if not config.is_file():
        err.print(f"error: {config}: no such training config")
        raise typer.Exit(EXIT_USAGE)
    from cad_tools.training.rescore_train import is_second_stage_recipe, train_second_stage

    try:
        name = yaml.safe_load(config.read_text())["name"]
        if is_second_stage_recipe(config):
            model_dir = train_second_stage(config, out or Path("runs") / f"{name}-second-stage")
        else:
            model_dir = run_training(config, out or Path("runs") / name, resume=resume)
    except (DatasetError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        err.print(f"error: {config}: {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except ModelIntegrityError as exc:  # the second stage's first-stage model
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_MODEL) from None
    console.print(f"locked model written to {model_dir}")


def reader_study(
    input_file: Annotated[Path, typer.Argument(
        metavar="INPUT", help="Ratings: flat CSV (reader,treatment,case,truth,rating), iMRMC file or JAFROC "
                              "workbook (sheets Truth, TP, FP; ROC or FROC).")],
    fom: Annotated[str, typer.Option("--fom", help="Figure of merit: wilcoxon (ROC data) or wafroc (FROC data).")],
    json_out: Annotated[Path, output_file_option("Write the results here (JSON, reader_study schema).", "--json")],
    method: Annotated[str, typer.Option("--method", help="or (Obuchowski-Rockette, Hillis ddf), dbm, or both.")] = "or",
    report: Annotated[Path | None, output_folder_option("Folder for the HTML and PDF report with curves.", "--report")
                      ] = None,
    alpha: Annotated[float, typer.Option("--alpha", min=0.001, max=0.5, help="1 - confidence level.")] = 0.05,
) -> None:
    """MRMC reader-study analysis (OR/DBM; RRRC, FRRC, RRFC) of ROC or FROC ratings, as RJafroc."""
    import shlex

    from verification.readerstudy import FigureOfMerit, Method, ReaderStudyInputError, analyse, read_reader_study

    methods = {"or": (Method.OR,), "dbm": (Method.DBM,), "both": (Method.OR, Method.DBM)}
    if fom.lower() not in {f.value for f in FigureOfMerit}:
        err.print(f"error: --fom {fom}: use wilcoxon or wafroc")
        raise typer.Exit(EXIT_USAGE)
    if method.lower() not in methods:
        err.print(f"error: --method {method}: use or, dbm or both")
        raise typer.Exit(EXIT_USAGE)
    require_existing([input_file])
    try:
        result = analyse(read_reader_study(input_file), FigureOfMerit(fom.lower()), methods[method.lower()], alpha)
    except ReaderStudyInputError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    output = result.to_json()
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(output, indent=2, allow_nan=False) + "\n")

    def num(value: float | None, spec: str) -> str:  # undefined statistics (degenerate data) are None
        return "-" if value is None else format(value, spec)

    tests = Table(title=f"{result.fom.label}: {result.study.n_treatments} treatments, "
                        f"{result.study.n_readers} readers, {result.study.n_cases} cases")
    diffs = Table(title="Treatment differences (reader-averaged)")
    for column in ("method", "analysis", "statistic", "df", "p"):
        tests.add_column(column, justify="right" if column in ("statistic", "df", "p") else "left")
    for column in ("method", "analysis", "difference", "estimate", f"{100 * (1 - alpha):g}% CI", "p"):
        diffs.add_column(column, justify="right" if column in ("estimate", "p") else "left")
    for name, analyses in output["analyses"].items():
        for analysis, test in analyses.items():
            stat, df = ((f"F {num(test['f'], '.3f')}", f"{test['df_num']:g}, {num(test['df_den'], '.2f')}")
                        if "f" in test else (f"chi2 {num(test['chisq'], '.3f')}", f"{test['df']:g}"))
            tests.add_row(name, analysis, stat, df, num(test["p"], ".4g"))
            for d in test["differences"]:
                diffs.add_row(name, analysis, f"{d['treatment_a']} - {d['treatment_b']}", f"{d['estimate']:+.4f}",
                              f"{num(d['ci_lower'], '+.4f')}, {num(d['ci_upper'], '+.4f')}", num(d["p"], ".4g"))
    console.print(tests)
    console.print(diffs)
    console.print(f"results: {json_out}")
    if report is not None:
        from verification.readerstudy.report import write_report

        paths = write_report(result, report, shlex.join(["cad", *sys.argv[1:]]))
        console.print(f"report: {paths[0]} and {paths[1]}")


def trace(
    out: Annotated[Path, output_folder_option("Folder for the matrices (CSV, HTML, JSON) and gaps.txt.")],
    junit: Annotated[Path, typer.Option("--junit", help="JUnit XML of the test run to trace.")] = Path(
        "reports/junit.xml"),
    strict: Annotated[bool, typer.Option(
        "--strict", help="Count known anomalies and hardware-dependent requirements as gaps (release builds).")
    ] = False,
) -> None:
    """Build the traceability matrices (requirement -> item -> tests -> result; hazard -> control ->
    requirement -> tests) from requirements/, risk/, docs/software-items.yaml, the lock file and
    the JUnit results. Exit 1 listing every gap; 2 when the sources or results cannot be read."""
    import shlex

    from traceability.matrix import build_trace, detected_environments
    from traceability.report import write_trace
    from traceability.requirements import RequirementsError
    from traceability.results import read_junit

    require_existing([junit])
    try:
        run = read_junit(junit)
    except (ValueError, OSError) as exc:
        err.print(f"error: {junit}: not a readable JUnit XML file ({exc})")
        raise typer.Exit(EXIT_USAGE) from None
    try:
        result = build_trace(run, detected_environments(), strict)
    except (RequirementsError, KeyError, ValueError, OSError) as exc:
        err.print(f"error: traceability sources: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    paths = write_trace(result, out, shlex.join(["cad", *sys.argv[1:]]))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts().items()))
    console.print(f"{len(result.requirements)} requirements ({counts}); matrices: {paths['html']}")
    for note in result.notes:
        console.print(f"note: {note}")
    for gap in result.gaps:
        err.print(f"gap: {gap}")
    if result.gaps:
        err.print(f"error: {len(result.gaps)} traceability gap(s); see {paths['gaps']}")
        raise typer.Exit(EXIT_NOTHING_ANALYSED)


def release_compare(
    released: Annotated[Path, typer.Option("--released", help="The released locked model folder.")],
    candidate: Annotated[Path, typer.Option("--candidate", help="The candidate locked model folder.")],
    protocol: Annotated[Path, typer.Option("--protocol", help="The acceptance protocol (docs/change-protocol.yaml).")],
    out: Annotated[Path, output_folder_option("Folder: verdict.json, report.html/.pdf, release-notes entry.")],
    data: Annotated[Path | None, typer.Option(
        "--data", help="Where the sequestered sets are (generated from their seeds when absent; default OUT/data).")
    ] = None,
    record: Annotated[Path | None, output_file_option(
        "Also copy verdict.json here (docs/acceptance/NAME.json: listed in the release notes).", "--record")] = None,
    candidate_runtime: Annotated[str | None, typer.Option(
        "--candidate-runtime", help="Run the candidate with this runtime (a variant, e.g. onnxruntime-int8); "
                                    "default: the protocol's.")] = None,
) -> None:
    """Apply the acceptance protocol to a candidate model against the released one: both run on
    the same sequestered exams, paired exam-level bootstrap of each endpoint's difference,
    non-inferiority margins, subgroups. Exit 0 accepted, 1 rejected, 2 usage, 3 a model failed
    verification."""
    import shlex
    import shutil

    from cad.detect.locked import ModelIntegrityError
    from cad.detect.runtime import RuntimeUnavailableError
    from cad_tools.change import release_compare as run_compare
    from verification.change_control import ACCEPTED, ProtocolError, load_protocol

    require_existing([released, candidate, protocol])
    try:
        rules = load_protocol(protocol)
    except ProtocolError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    models = verified_model(released, released_only=False), verified_model(candidate, released_only=False)
    try:
        verdict = run_compare(rules, models[0], models[1], out, data or out / "data",
                              shlex.join(["cad", *sys.argv[1:]]), candidate_runtime)
    except (ProtocolError, RuntimeUnavailableError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    except ModelIntegrityError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_MODEL) from None
    table = Table(title=f"{rules.id} {rules.version}: {verdict['verdict']}")
    for column in ("criterion", "released", "candidate", "difference", "CI", "margin", "result"):
        table.add_column(column)
    for c in verdict["criteria"]:
        table.add_row(f"{c['id']} {c['title']}", str(c["released"]), str(c["candidate"]), str(c["difference"]),
                      f"[{c['ci'][0]}, {c['ci'][1]}]", f"{c['margin']:+g}", "pass" if c["passed"] else "FAIL")
    console.print(table)
    failing = [s for s in verdict["subgroups"] if s["qualifies"] and not s["passed"]]
    for s in failing:
        err.print(f"subgroup {s['id']}: {s['why']}")
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "verdict.json", record)
        if candidate_runtime:  # a runtime variant: its verdict goes beside it in the manifest
            from cad_tools.change import record_variant_acceptance

            record_variant_acceptance(models[1], candidate_runtime, verdict, record)
    console.print(f"verdict: {out / 'verdict.json'}; report: {out / 'report.html'} and {out / 'report.pdf'}")
    if verdict["verdict"] != ACCEPTED:
        err.print(f"error: candidate rejected: {', '.join(verdict['failed_criteria'])}")
        raise typer.Exit(EXIT_NOTHING_ANALYSED)
