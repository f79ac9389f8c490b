"""The `cad` command line.

Exit codes (all verbs): 0 success; 1 nothing could be analysed (every input refused; for
`cad serve --once` a study failed or a source was unreachable; for `cad audit verify` the log
was altered);
2 usage error (bad option, missing input, or a runtime that cannot run here); 3 the locked model
(weights or its ONNX export) failed verification; 4 (`cad detect`) images were analysed but a
study's DICOM outputs (SR, presentation state) could not be written. Problems go to stderr, one
line each, naming the file and the problem; no patient identifier is ever printed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

import cad

if TYPE_CHECKING:
    from cad.detect.locked import LockedModel
    from cad.detect.runtime import Runtime

#: libraries whose INFO/DEBUG output may carry identifiers (UIDs, header dumps)
QUIET_LOGGERS = ("dicomweb_client", "highdicom", "pynetdicom", "pydicom", "uvicorn", "httpx")

EXIT_OK = 0
EXIT_NOTHING_ANALYSED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
#: analysed, but a study's DICOM outputs (SR, presentation state) could not be written
EXIT_OUTPUTS_INCOMPLETE = 4

app = typer.Typer(
    name="cad",
    help=f"Mammography CADe {cad.__version__}: dual-view mass detection on screening mammograms. "
    "Not for clinical use (trained and verified on synthetic phantoms only); see the instructions for use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _require_existing(paths: list[Path]) -> None:
    """One error line per missing input, then a usage exit; nothing is analysed."""
    missing = [p for p in paths if not p.exists()]
    for path in missing:
        err.print(f"error: {path}: no such file or folder")
    if missing:
        raise typer.Exit(EXIT_USAGE)


def _check_runtime_name(runtime: str) -> None:
    """A usage error unless ``runtime`` is empty (the default) or a known runtime."""
    from cad.detect.runtime import RuntimeName

    names = [r.value for r in RuntimeName]
    if runtime and runtime not in names:
        err.print(f"error: --runtime {runtime}: use {', '.join(names)}")
        raise typer.Exit(EXIT_USAGE)


def _verified_model(model: Path | None) -> LockedModel:
    """The locked model, verified against its manifest (exit 3 otherwise)."""
    from cad.detect.locked import ModelIntegrityError, load_locked_model

    try:
        return load_locked_model(model)
    except ModelIntegrityError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_MODEL) from None


def _verified_model_and_runtime(model: Path | None, runtime: str) -> tuple[LockedModel, Runtime]:
    """The locked model, verified (exit 3 otherwise), and its runtime (exit 3 if its export fails
    verification, 2 if it cannot run here)."""
    from cad.detect.locked import ModelIntegrityError
    from cad.detect.runtime import DEFAULT_RUNTIME, RuntimeUnavailableError, make_runtime

    locked = _verified_model(model)
    try:
        return locked, make_runtime(locked, runtime or DEFAULT_RUNTIME)
    except ModelIntegrityError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_MODEL) from None
    except RuntimeUnavailableError as exc:
        err.print(f"error: --runtime {runtime}: {exc}")
        raise typer.Exit(EXIT_USAGE) from None


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # third-party libraries log full UIDs and DICOM headers at INFO/DEBUG; the product's own
    # log lines name a study only by the tail of its UID and never a patient
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@app.command()
def phantom(
    out: Annotated[Path, typer.Option("--out", help="Output folder (DICOM files + truth.json).")],
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
    from cad.tools.phantom.generate import PhantomConfig, generate

    run = generate(
        out, exams, seed, PhantomConfig(spacing_mm=spacing, bits_stored=bits), workers=workers
    )
    lesions = sum(len(e["lesions"]) for e in run.truth["exams"])
    console.print(
        f"wrote {exams} exam(s), {run.images} images, {lesions} lesion(s) to {out} "
        f"({run.images_per_second:.2f} images/s); truth: {out / 'truth.json'}"
    )


@app.command()
def inspect(
    inputs: Annotated[list[Path], typer.Argument(help="DICOM files or folders.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write geometry overlay PNGs here.")
    ] = None,
    truth: Annotated[
        Path | None, typer.Option("--truth", help="truth.json whose lesion boxes to draw.")
    ] = None,
) -> None:
    """Ingest mammograms, report each image's status and breast geometry, draw overlays."""
    from cad.io import load
    from cad.io.uids import uid_tail
    from cad.overlay import Mark, render_overlay
    from cad.preprocess import compute_geometry

    _require_existing(inputs)
    truth_boxes: dict[str, list[Mark]] = {}
    if truth is not None:
        data = json.loads(truth.read_text())
        for exam in data["exams"]:
            for lesion in exam["lesions"]:
                for view in lesion["views"]:
                    label = f"{lesion['lesion_id']} {lesion['type'].split('_')[0]}"
                    truth_boxes.setdefault(view["sop_instance_uid"], []).append(
                        Mark(view["box"], label, (255, 210, 0))
                    )

    result = load(inputs)
    table = Table(title="Ingest", show_lines=False)
    for column in ("study", "image", "lat", "view", "spacing mm", "status"):
        table.add_column(column)
    written: list[Path] = []
    for study in result.studies:
        short_study = uid_tail(study.study_instance_uid)
        for image in study.images:
            geometry = compute_geometry(image)
            notes = "; ".join((*image.warnings, *geometry.warnings))
            table.add_row(
                short_study,
                image.path.name,
                image.laterality.value,
                image.view.value,
                f"{image.spacing.row_mm:g} ({image.spacing.source})",
                "analysed" + (f" ({notes})" if notes else ""),
            )
            if out is not None:
                name = f"{image.laterality.value}_{image.view.value}_{image.sop_instance_uid[-12:]}.png"
                written.append(
                    render_overlay(
                        image, geometry, truth_boxes.get(image.sop_instance_uid, []),
                        out / study.study_instance_uid / name,
                    )
                )
    for failure in result.failures:
        ref = failure.ref
        table.add_row(
            uid_tail(ref.study_instance_uid) if ref.study_instance_uid else "?",
            ref.path.name,
            ref.laterality.value if ref.laterality else "?",
            ref.view.value if ref.view else "?",
            "",
            f"not analysed: {failure.message}",
        )
        err.print(f"error: {failure}")
    console.print(table)
    if written:
        console.print(f"overlays: {out} ({len(written)} PNG)")
    if not result.images:
        err.print("error: nothing could be analysed")
        raise typer.Exit(EXIT_NOTHING_ANALYSED)


@app.command()
def detect(
    inputs: Annotated[list[Path], typer.Argument(help="DICOM files or folders (one or many studies).")],
    out: Annotated[Path, typer.Option(
        "--out", help="Output folder: <StudyInstanceUID>/findings.json, cad-sr.dcm, cad-pr.dcm, overlays/.")],
    model: Annotated[
        Path | None, typer.Option("--model", help="Locked model folder (default: the released model).")
    ] = None,
    overlays: Annotated[bool, typer.Option("--overlays/--no-overlays", help="Write overlay PNGs.")] = True,
    runtime: Annotated[str, typer.Option(
        "--runtime", help="Network runtime: onnxruntime (default), torch or tensorrt.")] = "",
    batch_exams: Annotated[int, typer.Option(
        "--batch-exams", min=1, help="Studies analysed together (their equal-size views share network batches).")] = 1,
) -> None:
    """Detect masses on every view, link CC/MLO findings; write findings.json, a Mammography CAD SR,
    a presentation state and overlays per study."""
    import torch

    from cad.io import load
    from cad.io.uids import uid_tail
    from cad.job import run_studies
    from cad.stages import Stage, StageClock

    _check_runtime_name(runtime)
    _require_existing(inputs)
    locked, engine = _verified_model_and_runtime(model, runtime)
    clock = StageClock()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with clock.stage(Stage.DECODE):
        result = load(inputs)
    table = Table(title=f"CAD {locked.name} (model {locked.sha256[:12]})")
    for column in ("study", "images analysed", "not analysed", "findings", f"marks ≥ {locked.operating_threshold:.2f}",
                   "linked", "DICOM"):
        table.add_column(column)
    images_analysed = 0
    dicom_failed = 0
    for first in range(0, len(result.studies), batch_exams):
        group = result.studies[first:first + batch_exams]
        for outcome in run_studies(group, locked, engine, out, overlays, clock):
            findings = outcome.findings
            images_analysed += outcome.images_analysed
            dicom_failed += outcome.dicom is None
            marks = [f for f in findings.findings if f.score >= findings.operating_threshold]
            table.add_row(uid_tail(findings.study_instance_uid), str(outcome.images_analysed),
                          str(len(findings.images) - outcome.images_analysed), str(len(findings.findings)),
                          str(len(marks)), str(sum(f.linked for f in marks)), outcome.dicom_summary())
            for line in outcome.problems:
                err.print(line)
    if result.unassigned_failures:
        records = [{"file": f.ref.path.name, "reason": f.message, "code": f.code.value}
                   for f in result.unassigned_failures]
        out.mkdir(parents=True, exist_ok=True)
        (out / "not_analysed.json").write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
        for failure in result.unassigned_failures:
            err.print(f"error: {failure}")
    console.print(table)
    if result.studies:
        # per study: ingest (decode) + geometry + network + linking + outputs, averaged
        n = len(result.studies)
        wall_s = (time.perf_counter() - wall0) / n
        cpu_s = (time.process_time() - cpu0) / n
        summary = {
            "studies": n, "images_analysed": images_analysed,
            "mean_wall_seconds_per_study": round(wall_s, 3),
            "mean_cpu_seconds_per_study": round(cpu_s, 3),
            "stage_seconds_per_study": {k: round(v / n, 4) for k, v in clock.as_dict().items()},
            "torch_threads": torch.get_num_threads(), "model_sha256": locked.sha256, "runtime": engine.name,
            "batch_exams": batch_exams,
            "note": "timing of this run (not part of findings.json, which is deterministic)",
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "detect_run.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        console.print(f"analysis time per study: {wall_s:.2f} s wall, {cpu_s:.2f} s CPU "
                      f"({torch.get_num_threads()} threads, {engine.name}, ingest to outputs)")
    console.print(f"results: {out}")
    if not images_analysed:
        err.print("error: nothing could be analysed")
        raise typer.Exit(EXIT_NOTHING_ANALYSED)
    if dicom_failed:
        err.print(f"error: the DICOM outputs of {dicom_failed} stud{'y' if dicom_failed == 1 else 'ies'} "
                  "could not be written (see above); their findings.json is complete")
        raise typer.Exit(EXIT_OUTPUTS_INCOMPLETE)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Output folder (the model folder registers the export).")],
    export_format: Annotated[str, typer.Option("--format", help="onnx, or tensorrt (on a CUDA GPU).")] = "onnx",
    model: Annotated[
        Path | None, typer.Option("--model", help="Locked model folder (default: the released model).")
    ] = None,
    parity_input: Annotated[Path | None, typer.Option(
        "--parity-input", help="tensorrt: DICOM exams for the parity check (default: 2 generated phantom exams).")] = None,
) -> None:
    """Export the locked detector's backbone, FPN and heads: ONNX (float32 compute, float16-exact
    weights), or a TensorRT FP16 engine built from it on this GPU after a parity check against
    ONNX Runtime. Postprocessing stays the shared Python code.

    When --out is the model folder itself, the export is recorded in its manifest.json
    (runtimes.onnxruntime / runtimes.tensorrt), which is what `cad detect --runtime` verifies and
    runs; otherwise a separate manifest is written beside the export."""
    from cad.detect.runtime import tensorrt_available

    if export_format not in {"onnx", "tensorrt"}:
        err.print(f"error: --format {export_format}: use onnx or tensorrt")
        raise typer.Exit(EXIT_USAGE)
    if export_format == "tensorrt" and not tensorrt_available():
        err.print("error: --format tensorrt: TensorRT needs a CUDA GPU and the tensorrt package; not available here")
        raise typer.Exit(EXIT_USAGE)
    locked = _verified_model(model)
    registered = out.resolve() == locked.path.resolve()
    if export_format == "onnx":
        from cad.detect.locked import register_export
        from cad.detect.onnx_export import RESCORER_RUNTIME_KEY, export_onnx, export_rescorer, register_onnx

        entry = export_onnx(locked, out, write_manifest=not registered)
        if registered:
            register_onnx(locked.path, entry)
        detail = f"opset {entry['opset']}"
        if locked.rescorer is not None:
            second = export_rescorer(locked, out)
            if registered:
                register_export(locked.path, RESCORER_RUNTIME_KEY, second)
            else:
                (out / "onnx_rescorer_manifest.json").write_text(json.dumps(second, indent=2, sort_keys=True) + "\n")
            detail += f"; second stage {second['file']} ({second['bytes'] / 1e3:.0f} kB, SHA-256 {second['sha256'][:12]})"
    else:
        entry = _export_tensorrt(locked, out, parity_input)
        parity = entry["parity_vs_onnxruntime"]
        detail = (f"{entry['gpu']}, TensorRT {entry['tensorrt']}; parity with ONNX Runtime on {parity['views']} views: "
                  f"max score difference {parity['max_score_difference']}, min IoU {parity['min_iou']}")
    console.print(f"wrote {out / entry['file']} ({entry['bytes'] / 1e6:.1f} MB, {detail}, "
                  f"SHA-256 {entry['sha256'][:12]}) from weights {locked.sha256[:12]}"
                  + (f"; recorded in {locked.path / 'manifest.json'}" if registered else ""))


def _export_tensorrt(locked: LockedModel, out: Path, parity_input: Path | None) -> dict[str, Any]:
    """Build and parity-check the TensorRT engine; exit 1 when parity fails."""
    import tempfile

    from cad.detect.inputs import prepare_view
    from cad.detect.tensorrt import export_tensorrt
    from cad.io import load

    with tempfile.TemporaryDirectory() as tmp:
        folder = parity_input
        if folder is None:
            from cad.tools.phantom.generate import generate

            folder = Path(tmp)
            generate(folder, exams=2, seed=20261201)
        views = [prepare_view(image, locked.config) for image in load([folder]).images]
    try:
        return export_tensorrt(locked, out, views)
    except RuntimeError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_NOTHING_ANALYSED) from None


@app.command()
def bench(
    inputs: Annotated[list[Path], typer.Argument(help="Folder(s) of DICOM exams to time (4-view exams).")],
    json_out: Annotated[Path, typer.Option("--json", help="Write the measurements here (JSON).")],
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
    model: Annotated[
        Path | None, typer.Option("--model", help="Locked model folder (default: the released model).")
    ] = None,
    baseline_model: Annotated[Path | None, typer.Option(
        "--baseline-model", help="Another locked model (e.g. the previous release) timed in the same turns; "
                                 "the exam-time ratio is reported.")] = None,
) -> None:
    """Benchmark (not a test): model stage per view, warm end-to-end exam latency p50/p95,
    throughput and stage times for each runtime, batch scaling, cold start, image size, memory."""
    from cad.detect.locked import ModelIntegrityError
    from cad.detect.runtime import RuntimeName, RuntimeUnavailableError
    from cad.tools.bench import run_bench

    names = [n.strip() for n in runtimes.split(",") if n.strip()]
    unknown = [n for n in names if n not in {r.value for r in RuntimeName}]
    if unknown or not names:
        err.print(f"error: --runtimes {runtimes}: use a comma-separated subset of torch, onnxruntime, tensorrt")
        raise typer.Exit(EXIT_USAGE)
    _require_existing(inputs + list(size_input or []))
    locked = _verified_model(model)
    baseline = _verified_model(baseline_model) if baseline_model is not None else None
    try:
        result = run_bench(inputs, locked, names, repeats, max_exams, list(size_input or []), cold, baseline)
    except ModelIntegrityError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_MODEL) from None
    except (ValueError, RuntimeUnavailableError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    table = Table(title=f"cad bench: {result['machine']['cpu']}, {result['machine']['torch_threads']} threads")
    for column in ("runtime", "model s/view", "exam p50 s", "exam p95 s", "exams/min", "non-model share"):
        table.add_column(column)
    for name, row in result["runtimes"].items():
        if row.get("available") is False:
            table.add_row(name, "unavailable: " + row["reason"], "", "", "", "")
            continue
        table.add_row(name, f"{row['model_s_per_view']:.3f}", f"{row['exam_latency_p50_s']:.3f}",
                      f"{row['exam_latency_p95_s']:.3f}", f"{row['exams_per_min']:.1f}",
                      f"{row['non_model_fraction']:.0%}")
    console.print(table)
    if baseline is not None:
        ratios = ", ".join(f"{name} {ratio:.2f}x" for name, ratio in result["baseline"]["exam_time_ratio"].items())
        console.print(f"exam time against {baseline.name} ({baseline.sha256[:12]}): {ratios}")
    console.print(f"measurements: {json_out}")


@app.command()
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="truth.json (phantom or converted dataset).")],
    findings: Annotated[Path, typer.Option("--findings", help="`cad detect` output folder.")],
    out: Annotated[
        Path, typer.Option("--out", help="Report folder: metrics.json, operating_points.csv, plots, report.html.")
    ],
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

    _require_existing([truth, findings])
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


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", help="Training recipe (YAML).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/<name>).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's checkpoint.")] = False,
) -> None:
    """Train the detector on phantom or public-dataset images, or (a recipe with `stage: second`)
    the second stage on a locked first stage's candidates (development tool)."""
    import yaml

    from cad.detect.locked import ModelIntegrityError
    from cad.tools.training.datasets import DatasetError
    from cad.tools.training.train import train as run_training

    if not config.is_file():
        err.print(f"error: {config}: no such training config")
        raise typer.Exit(EXIT_USAGE)
    from cad.tools.training.rescore_train import is_second_stage_recipe, train_second_stage

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


@app.command("reader-study")
def reader_study(
    input_file: Annotated[Path, typer.Argument(
        metavar="INPUT", help="Ratings: flat CSV (reader,treatment,case,truth,rating), iMRMC file or JAFROC "
                              "workbook (sheets Truth, TP, FP; ROC or FROC).")],
    fom: Annotated[str, typer.Option("--fom", help="Figure of merit: wilcoxon (ROC data) or wafroc (FROC data).")],
    json_out: Annotated[Path, typer.Option("--json", help="Write the results here (JSON, reader_study schema).")],
    method: Annotated[str, typer.Option("--method", help="or (Obuchowski-Rockette, Hillis ddf), dbm, or both.")] = "or",
    report: Annotated[
        Path | None, typer.Option("--report", help="Folder for the HTML and PDF report with curves.")
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
    _require_existing([input_file])
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


def _address(value: str, option: str) -> tuple[str, int]:
    """``NAME:PORT`` (host or AE title, then port) or a usage error."""
    name, _, port = value.rpartition(":")
    if not name or not port.isdigit() or not 0 < int(port) < 65536:
        err.print(f"error: {option} {value}: use NAME:PORT")
        raise typer.Exit(EXIT_USAGE)
    return name, int(port)


@app.command()
def serve(
    state: Annotated[Path, typer.Option("--state", help="State folder: job queue, audit log, received and result files.")],
    dicomweb: Annotated[str | None, typer.Option(
        "--dicomweb", help="DICOMweb root of the PACS (QIDO/WADO/STOW), e.g. http://pacs:8042/dicom-web.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only studies from this date on (YYYYMMDD).")] = None,
    watch: Annotated[Path | None, typer.Option(
        "--watch", help="Folder to watch: studies dropped in it are analysed, results written beside them.")] = None,
    scp: Annotated[str | None, typer.Option("--scp", help="Receive pushed studies as a C-STORE SCP: AET:PORT.")] = None,
    scp_allow: Annotated[str | None, typer.Option(
        "--scp-allow", help="Comma-separated calling AE titles the SCP accepts (default: any).")] = None,
    dicomweb_auth_file: Annotated[Path | None, typer.Option(
        "--dicomweb-auth-file", help="File with the Authorization header value for the PACS (Bearer ... or Basic ...).")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="HTTPS certificate (PEM) for the API.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="HTTPS private key (PEM) for the API.")] = None,
    send: Annotated[str | None, typer.Option(
        "--send", help="Deliver SR and GSPS with C-STORE to AET@HOST:PORT (default: back over DICOMweb).")] = None,
    api: Annotated[str | None, typer.Option("--api", help="Serve the HTTP API on HOST:PORT (needs --token-file).")] = None,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="File holding the API bearer token.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Analyse everything pending, then exit.")] = False,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=0.1, help="PACS/folder polling interval.")] = 30.0,
    quiet_seconds: Annotated[float, typer.Option(
        "--quiet-seconds", min=0.0, help="A pushed or dropped study is complete after this long without new files.")
    ] = 10.0,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, help="Tries per study when the PACS errs.")] = 5,
    retry_seconds: Annotated[float, typer.Option(
        "--retry-seconds", min=0.0, help="First retry delay; doubles per attempt (capped at 5 min).")] = 2.0,
    runtime: Annotated[str, typer.Option("--runtime", help="Network runtime: onnxruntime, torch or tensorrt.")] = "",
    model: Annotated[
        Path | None, typer.Option("--model", help="Locked model folder (default: the released model).")
    ] = None,
) -> None:
    """Run the CAD as a service: find new MG studies (DICOMweb polling, C-STORE, or a watched
    folder), analyse each (study, instance set) exactly once, deliver SR and GSPS, audit every
    analysis. Exit codes: 0 done; 1 (--once) a study failed or a source was unreachable;
    2 usage; 3 model verification failed."""
    from cad.service.api import read_token
    from cad.service.queue import FAILED, RetryPolicy
    from cad.service.service import Service, ServiceConfig
    from cad.service.store import StateLockedError

    logging.getLogger("cad").setLevel(logging.INFO)  # a service reports what it does
    _check_runtime_name(runtime)
    if since is not None and not (len(since) == 8 and since.isdigit()):
        err.print(f"error: --since {since}: use YYYYMMDD")
        raise typer.Exit(EXIT_USAGE)
    if watch is not None:
        _require_existing([watch])
    token = None
    if api:
        if token_file is None:
            err.print("error: --api needs --token-file: the API never runs without authentication")
            raise typer.Exit(EXIT_USAGE)
        try:
            token = read_token(token_file)
        except ValueError as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(EXIT_USAGE) from None
    if (tls_cert is None) != (tls_key is None):
        err.print("error: --tls-cert and --tls-key go together")
        raise typer.Exit(EXIT_USAGE)
    _require_existing([p for p in (tls_cert, tls_key, dicomweb_auth_file) if p is not None])
    auth = None
    if dicomweb_auth_file is not None:
        auth = dicomweb_auth_file.read_text().strip()
        if auth.split(" ", 1)[0] not in ("Bearer", "Basic") or len(auth.split(" ", 1)) != 2:
            err.print(f"error: {dicomweb_auth_file}: expected one line 'Bearer <token>' or 'Basic <base64>'")
            raise typer.Exit(EXIT_USAGE)
    try:
        config = ServiceConfig(
            state=state, dicomweb=dicomweb, since=since, watch=watch, scp=_address(scp, "--scp") if scp else None,
            send=send, api=_address(api, "--api") if api else None, token=token, poll_seconds=poll_seconds,
            quiet_seconds=quiet_seconds, retry=RetryPolicy(max_attempts=max_attempts, base_seconds=retry_seconds),
            scp_allow=tuple(a.strip() for a in (scp_allow or "").split(",") if a.strip()), dicomweb_auth=auth,
            tls=(tls_cert, tls_key) if tls_cert and tls_key else None,
        )
    except ValueError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    locked, engine = _verified_model_and_runtime(model, runtime)
    try:
        service = Service(config, locked, engine)
    except (ValueError, StateLockedError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    try:
        counts = service.run(once=once)
    finally:
        service.close()
    console.print("jobs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    unreachable = [name for name, ok in service.last_poll_ok.items() if not ok]
    for name in unreachable:
        err.print(f"error: {name}: could not be reached at the last poll")
    if once and (counts[FAILED] or unreachable):
        raise typer.Exit(EXIT_NOTHING_ANALYSED)


audit_app = typer.Typer(help="The service's audit log (hash-chained, append-only).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    state: Annotated[Path, typer.Option("--state", help="State folder of `cad serve`.")],
) -> None:
    """Recompute the audit log's hash chain; exit 1 and list the problems if it was altered."""
    from cad.service import audit, store

    _require_existing([state / store.DATABASE])
    result = audit.verify(store.connect(state))
    for problem in result.problems:
        err.print(f"error: {state / store.DATABASE}: {problem}")
    console.print(f"{result.records} records, head SHA-256 {result.head_sha256}: "
                  + ("intact" if result.intact else "NOT intact"))
    if not result.intact:
        raise typer.Exit(EXIT_NOTHING_ANALYSED)


@audit_app.command("show")
def audit_show(
    state: Annotated[Path, typer.Option("--state", help="State folder of `cad serve`.")],
    study: Annotated[str | None, typer.Option("--study", help="Only this StudyInstanceUID.")] = None,
) -> None:
    """Print the audit records (JSON lines, oldest first)."""
    from cad.service import audit, store

    _require_existing([state / store.DATABASE])
    for record in audit.records(store.connect(state), study):
        typer.echo(json.dumps(record, sort_keys=True))


@app.command()
def trace(
    out: Annotated[Path, typer.Option("--out", help="Folder for the matrices (CSV, HTML, JSON) and gaps.txt.")],
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

    from traceability.matrix import build_trace
    from traceability.report import write_trace
    from traceability.requirements import RequirementsError
    from traceability.results import read_junit

    _require_existing([junit])
    try:
        run = read_junit(junit)
    except (ValueError, OSError) as exc:
        err.print(f"error: {junit}: not a readable JUnit XML file ({exc})")
        raise typer.Exit(EXIT_USAGE) from None
    try:
        import torch

        environments = {"gpu"} if torch.cuda.is_available() else set()
        result = build_trace(run, environments, strict)
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


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
