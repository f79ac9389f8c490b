"""The `cad` command line.

Exit codes (all verbs): 0 success; 1 nothing could be analysed (every input refused);
2 usage error (bad option or missing input). Problems go to stderr, one line each, naming the
file and the problem; no patient identifier is ever printed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import cad

EXIT_OK = 0
EXIT_NOTHING_ANALYSED = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="cad",
    help=f"Mammography CADe {cad.__version__}: dual-view mass detection on screening mammograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)


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

    missing = [p for p in inputs if not p.exists()]
    for path in missing:
        err.print(f"error: {path}: no such file or folder")
    if missing:
        raise typer.Exit(EXIT_USAGE)
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


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
