"""Outputs of `cad evaluate` beside metrics.json: operating-point CSV, plots and the HTML report.

The HTML report follows the standalone-performance section of an FDA CADe submission: device
identification, data, reference standard, scoring method, results with confidence intervals,
subgroup analyses, limitations. It is one self-contained file, rendered from the template
``verification/templates/standalone.html`` (:mod:`verification.html`); the plots are also written
as PNG and SVG for the submission documents.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import cad
from verification.froc import FPI_POINTS
from verification.html import ci, png_data, render
from verification.standalone import SIZE_BANDS, StandaloneAnalysis

PLOTS = ("froc", "afroc", "roc")
TITLE = "Standalone performance assessment"


def write_operating_points(analysis: StandaloneAnalysis, path: Path) -> None:
    """CSV: every distinct threshold of the dual-view FROC curve, then the named points."""
    m = analysis.metrics
    thresholds, fpi, sens = analysis.dual.curve()
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["point", "threshold", "fpi", "sensitivity", "sensitivity_ci95_low", "sensitivity_ci95_high"])
        for t, f, s in zip(thresholds, fpi, sens):
            out.writerow(["curve", f"{t:.6f}", f"{f:.6f}", f"{s:.6f}", "", ""])
        dual = analysis.dual
        for f in FPI_POINTS:
            t = dual.threshold_at(f)
            ci = m["froc"]["dual_view_sensitivity_at_fpi"][f"{f:g}"]["ci95"]
            out.writerow([f"fpi<={f:g}", f"{t:.6f}", f"{dual.fpi_at_threshold(t):.6f}", f"{dual.sensitivity_at(f):.6f}",
                          *("" if c is None else f"{c:.4f}" for c in ci)])
        t = m["operating_point"]["locked_threshold"]
        out.writerow(["locked operating point", f"{t:.6f}", f"{dual.fpi_at_threshold(t):.6f}",
                      f"{dual.sensitivity_at_threshold(t):.6f}",
                      *("" if c is None else f"{c:.4f}" for c in m["operating_point"]["sensitivity_ci95"])])


def _save(fig: plt.Figure, out: Path, name: str) -> bytes:
    """Write NAME.png and NAME.svg (no timestamps, so reruns are identical); return the PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
    (out / f"{name}.png").write_bytes(buffer.getvalue())
    fig.savefig(out / f"{name}.svg", format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buffer.getvalue()


def _froc_plot(analysis: StandaloneAnalysis) -> plt.Figure:
    m = analysis.metrics
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    grid, low, high = analysis.froc_band
    ax.fill_between(grid, low, high, step="post", color="tab:blue", alpha=0.18, label="dual-view 95 % CI (bootstrap)")
    scorings = ((analysis.dual, "dual-view (product)", "-", "tab:blue"),
                (analysis.single, "single-view scoring", "--", "tab:gray"))
    for result, label, style, colour in scorings:
        _, fpi, sens = result.curve()
        ax.step(np.concatenate([[0.0], fpi]), np.concatenate([[0.0], sens]), where="post", ls=style, label=label,
                color=colour)
    named = m["froc"]["dual_view_sensitivity_at_fpi"]
    ax.plot(FPI_POINTS, [named[f"{f:g}"]["estimate"] for f in FPI_POINTS], "o", color="tab:blue", ms=4)
    op = m["operating_point"]
    ax.plot([op["fpi"]], [op["sensitivity"]], "D", color="tab:red",
            label=f"locked threshold {op['locked_threshold']:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xlim(1 / 32, 8)
    ax.set_xticks(FPI_POINTS, [f"{f:g}" for f in FPI_POINTS])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean false marks per image (FPI)")
    ax.set_ylabel("lesion sensitivity (per view)")
    ax.set_title(f"FROC: {m['data']['included_lesion_views']} lesion views, {m['data']['images']} images")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _curve_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], foms: dict[str, dict[str, Any]],
                xlabel: str, ylabel: str, title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    for name, (x, y) in curves.items():
        ax.plot(x, y, drawstyle="default", label=f"{name}: {ci(foms[name])}")
    ax.plot([0, 1], [0, 1], ":", color="gray", lw=0.8)
    ax.set_xlim(-0.02, 1.02)  # curves run along the axes: keep them visible
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="area (95 % CI)", title_fontsize=8)
    return fig


def write_plots(analysis: StandaloneAnalysis, out: Path) -> dict[str, bytes]:
    """froc, afroc and roc as PNG and SVG in ``out``; returns the PNGs for the HTML report."""
    m = analysis.metrics
    makers: dict[str, Callable[[], plt.Figure]] = {
        "froc": lambda: _froc_plot(analysis),
        "afroc": lambda: _curve_plot(analysis.afroc, {"AFROC": m["afroc"], "wAFROC": m["wafroc"]},
                                     "FPF (normal exams with a false mark)", "lesion localisation fraction",
                                     "AFROC and wAFROC (case = exam)"),
        "roc": lambda: _curve_plot(analysis.roc, {"case": m["roc"]["case"], "breast": m["roc"]["breast"]},
                                   "false-positive fraction", "true-positive fraction",
                                   "ROC (score = highest finding score)"),
    }
    return {name: _save(make(), out, name) for name, make in makers.items()}


def _tables(m: dict[str, Any]) -> dict[str, Any]:
    """Rows of the report's computed tables (the key/value tables are written in the template)."""
    ex, froc = m["exclusions"], m["froc"]
    tables: dict[str, Any] = {
        "excluded": [(r["reason"], r["lesions"], r["lesion_views"]) for r in ex["by_reason"]] or [("none", 0, 0)],
        "density": list(m["data"]["density_exams"].items()),
        "froc": [(f"{f:g}", ci(froc["dual_view_sensitivity_at_fpi"][f"{f:g}"]),
                  ci(froc["single_view_sensitivity_at_fpi"][f"{f:g}"]), ci(froc["fusion_gain_at_fpi"][f"{f:g}"]),
                  m["dual_view"]["threshold_at_fpi"][f"{f:g}"]) for f in FPI_POINTS],
        "per_lesion": [(f"{f:g}", ci(m["per_lesion"]["sensitivity_at_fpi"][f"{f:g}"])) for f in FPI_POINTS],
        "subgroups": {name: [(s["stratum"], s["lesion_views"], s["lesions"], ci(s["sensitivity_at_locked_threshold"]),
                              ci(s["sensitivity_at_1fpi"])) for s in strata]
                      for name, strata in m["subgroups"].items()},
    }
    det = m.get("detectability")
    if det:
        vis, hidden = det["visible"], det["not_visible"]
        tables["visibility"] = [(f"{f:g}", ci(vis["sensitivity_at_fpi"][f"{f:g}"]),
                                 ci(hidden["sensitivity_at_fpi"][f"{f:g}"])) for f in FPI_POINTS]
    return tables


def render_html(analysis: StandaloneAnalysis, pngs: dict[str, bytes], command: str, when: datetime) -> str:
    """The HTML document (template ``standalone.html``)."""
    m = analysis.metrics
    return render("standalone.html", title=TITLE, command=command, version=cad.__version__, when=when, m=m,
                  tables=_tables(m), figures={name: png_data(png) for name, png in pngs.items()},
                  size_bands=list(SIZE_BANDS), synthetic="phantom" in str(m["reference_standard"]["generator"] or ""))


def write_html(analysis: StandaloneAnalysis, pngs: dict[str, bytes], path: Path, command: str) -> None:
    """The self-contained standalone-performance report."""
    path.write_text(render_html(analysis, pngs, command, datetime.now(UTC)), encoding="utf-8")


def write_outputs(analysis: StandaloneAnalysis, out: Path, command: str) -> list[Path]:
    """operating_points.csv, froc/afroc/roc .png and .svg and report.html in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_operating_points(analysis, out / "operating_points.csv")
    pngs = write_plots(analysis, out)
    write_html(analysis, pngs, out / "report.html", command)
    return [out / "operating_points.csv", *(out / f"{n}.{e}" for n in PLOTS for e in ("png", "svg")),
            out / "report.html"]
