"""The `cad` command line.

Exit codes (all verbs): 0 success; 1 nothing could be analysed (every input refused);
2 usage error (bad option or missing input); 3 the locked model failed verification. Problems go to stderr, one line each, naming the
file and the problem; no patient identifier is ever printed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import cad

EXIT_OK = 0
EXIT_NOTHING_ANALYSED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3

app = typer.Typer(
    name="cad",
    help=f"Mammography CADe {cad.__version__}: dual-view mass detection on screening mammograms.",
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


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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
        short_study = "…" + study.study_instance_uid[-8:]
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
            "…" + ref.study_instance_uid[-8:] if ref.study_instance_uid else "?",
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
) -> None:
    """Detect masses on every view, link CC/MLO findings; write findings.json, a Mammography CAD SR,
    a presentation state and overlays per study."""
    import torch

    from cad.detect.locked import ModelIntegrityError, load_locked_model
    from cad.detect.overlays import write_overlays
    from cad.detect.pipeline import analyse_study
    from cad.io import load
    from cad.io.outputs import write_dicom_outputs

    _require_existing(inputs)
    try:
        locked = load_locked_model(model)
    except ModelIntegrityError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_MODEL) from None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = load(inputs)
    table = Table(title=f"CAD {locked.name} (model {locked.sha256[:12]})")
    for column in ("study", "images analysed", "not analysed", "findings", f"marks ≥ {locked.operating_threshold:.2f}",
                   "linked", "DICOM"):
        table.add_column(column)
    analysed_any = False
    images_analysed = 0
    for study in result.studies:
        findings, views = analyse_study(study, locked)
        folder = out / study.study_instance_uid
        findings.write(folder / "findings.json")
        if overlays:
            write_overlays(findings, views, folder / "overlays")
        try:
            dicom = write_dicom_outputs(findings, study, folder)
            written = "+".join(name for name, path in (("SR", dicom.sr), ("GSPS", dicom.pr)) if path) or "none"
            if dicom.pr_problem and dicom.sr:
                err.print(f"warning: study …{study.study_instance_uid[-8:]}: no presentation state: {dicom.pr_problem}")
        except ValueError as exc:
            err.print(f"error: study …{study.study_instance_uid[-8:]}: DICOM outputs not written: {exc}")
            written = "failed"
        n_ok = sum(i.status == "analyzed" for i in findings.images)
        analysed_any |= n_ok > 0
        images_analysed += n_ok
        marks = [f for f in findings.findings if f.score >= findings.operating_threshold]
        table.add_row("…" + study.study_instance_uid[-8:], str(n_ok), str(len(findings.images) - n_ok),
                      str(len(findings.findings)), str(len(marks)), str(sum(f.linked for f in marks)), written)
        for image in findings.images:
            if image.status != "analyzed":
                err.print(f"error: {image.file}: not analysed: {image.reason}")
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
            "torch_threads": torch.get_num_threads(), "model_sha256": locked.sha256,
            "note": "timing of this run (not part of findings.json, which is deterministic)",
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "detect_run.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        console.print(f"analysis time per study: {wall_s:.2f} s wall, {cpu_s:.2f} s CPU "
                      f"({torch.get_num_threads()} threads, ingest to outputs)")
    console.print(f"results: {out}")
    if not analysed_any:
        err.print("error: nothing could be analysed")
        raise typer.Exit(EXIT_NOTHING_ANALYSED)


@app.command()
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="truth.json (phantom or converted dataset).")],
    findings: Annotated[Path, typer.Option("--findings", help="`cad detect` output folder.")],
    out: Annotated[Path, typer.Option("--out", help="Report folder (metrics.json).")],
    min_diameter: Annotated[float, typer.Option("--min-diameter-mm", help="Smallest mass counted.")] = 8.0,
    iou: Annotated[
        float | None, typer.Option("--iou", help="Localise by IoU >= this instead of centre-in-box.")
    ] = None,
) -> None:
    """Standalone performance: lesion FROC (dual- vs single-view scoring) and CC/MLO linking."""
    from verification.standalone import Criteria, EvaluationInputError, load_findings, load_truth
    from verification.standalone import evaluate as run_evaluation

    _require_existing([truth, findings])
    try:
        truth_data = load_truth(truth)
        found = load_findings(findings)
        if not found:
            raise EvaluationInputError(f"{findings}: no findings.json below this folder")
        metrics = run_evaluation(truth_data, found, Criteria(min_diameter_mm=min_diameter, iou_threshold=iou))
    except EvaluationInputError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
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
    console.print(f"metrics: {out / 'metrics.json'}")


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", help="Training recipe (YAML).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: runs/<name>).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's checkpoint.")] = False,
) -> None:
    """Train the detector on phantom or public-dataset images (development tool)."""
    import yaml

    from cad.tools.training.datasets import DatasetError
    from cad.tools.training.train import train as run_training

    if not config.is_file():
        err.print(f"error: {config}: no such training config")
        raise typer.Exit(EXIT_USAGE)
    try:
        name = yaml.safe_load(config.read_text())["name"]
        model_dir = run_training(config, out or Path("runs") / name, resume=resume)
    except (DatasetError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        err.print(f"error: {config}: {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    console.print(f"locked model written to {model_dir}")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
