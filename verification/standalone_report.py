"""Outputs of `cad evaluate` beside metrics.json: operating-point CSV, plots and the HTML report.

The HTML report follows the standalone-performance section of an FDA CADe submission: device
identification, data, reference standard, scoring method, results with confidence intervals,
subgroup analyses, limitations. It is one self-contained file (:mod:`verification.html`); the
plots are also written as PNG and SVG for the submission documents.
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
from verification.html import esc, figure, fmt, page, table
from verification.standalone import SIZE_BANDS, StandaloneAnalysis

PLOTS = ("froc", "afroc", "roc")


def _ci(value: dict[str, Any], digits: int = 3) -> str:
    """'0.846 (0.600, 1.000)' from {'estimate', 'ci95'}; em dashes where undefined."""
    low, high = value["ci95"]
    return f"{fmt(value['estimate'], digits)} ({fmt(low, digits)}, {fmt(high, digits)})"


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
        ax.plot(x, y, drawstyle="default", label=f"{name}: {_ci(foms[name])}")
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


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return table(["item", "value"], pairs, left_columns=2)


def _findability_section(m: dict[str, Any]) -> str:
    """Per-lesion sensitivity, and sensitivity by template-observer visibility (a stratum)."""
    per_lesion = m["per_lesion"]["sensitivity_at_fpi"]
    html = ("<h3>Per lesion: localised in either view</h3>"
            + table(["FPI", f"sensitivity, {m['per_lesion']['lesions']} lesions (95 % CI)"],
                    [(f"{f:g}", _ci(per_lesion[f"{f:g}"])) for f in FPI_POINTS]))
    det = m.get("detectability")
    if not det:
        return html + ("<p class=\"note\">The truth records no detectability, so sensitivity is not split by "
                       "what an ideal observer can find.</p>")
    vis, hidden = det["visible"], det["not_visible"]
    html += (
        "<h3>By template-observer visibility (a descriptive stratum)</h3>"
        "<p>The phantom knows every lesion's exact signal. A lesion view is <i>visible</i> when, for at least one "
        "of three filters matched to that signal (raw, zero-mean, prewhitened by the view's own noise power "
        "spectrum) on the detector's input, at most one local maximum elsewhere in the breast outranks the "
        "lesion (docs/phantom.md). It describes how conspicuous a lesion is to such template observers, which "
        "are weak in anatomical texture; it is not a ceiling: the detector finds views they call not visible.</p>"
        + _rows([
            ("lesion views visible / recorded (per view)",
             f"{det['lesion_views_visible']} / {det['lesion_views_recorded']}: {_ci(det['visible_share_views'])}"),
            ("lesions visible in either view / recorded (per lesion)",
             f"{det['lesions_visible_in_either_view']} / {det['lesions_recorded']}: "
             f"{_ci(det['visible_share_lesions'])}"),
        ])
        + table(["FPI", f"visible lesion views ({vis['lesion_views']})",
                 f"not-visible lesion views ({hidden['lesion_views']})"],
                [(f"{f:g}", _ci(vis["sensitivity_at_fpi"][f"{f:g}"]), _ci(hidden["sensitivity_at_fpi"][f"{f:g}"]))
                 for f in FPI_POINTS])
    )
    return html


def _sections(analysis: StandaloneAnalysis, pngs: dict[str, bytes]) -> list[str]:
    m = analysis.metrics
    d, ex, dev, op = m["data"], m["exclusions"], m["device"], m["operating_point"]
    algo = dev["algorithm"]
    boot = m["bootstrap"]
    crit = m["criteria"]
    sections = [
        "<h2>1. Device and model identification</h2>" + _rows([
            ("algorithm", algo.get("name")), ("software version", algo.get("version")),
            ("model", algo.get("model_name")), ("model weights SHA-256", algo.get("model_sha256")),
            ("settings SHA-256", algo.get("settings_sha256")),
            ("locked operating point (threshold)", op["locked_threshold"]),
            ("operating point", dev["operating_point"].get("description")),
        ]),
        "<h2>2. Data</h2>" + _rows([
            ("exams (cases)", d["exams"]), ("images", d["images"]),
            ("images not analysed by the device", d["images_not_analysed"]),
            ("exams without device output", d["studies_without_findings"]),
            ("exams with an included lesion", d["exams_with_included_lesions"]),
            ("exams without an included lesion (normal for this analysis)", d["exams_without_included_lesions"]),
            ("– of which without any truth lesion", d["exams_without_any_lesion"]),
            ("– of which with excluded lesions only", ex["exams_with_only_excluded_lesions"]),
            ("breasts / with an included lesion", f"{d['breasts']} / {d['breasts_with_included_lesions']}"),
            ("included lesions / lesion views", f"{d['included_lesions']} / {d['included_lesion_views']}"),
            ("excluded lesions / lesion views", f"{ex['lesions_excluded']} / {ex['lesion_views_excluded']}"),
        ])
        + "<h3>Excluded lesions</h3>"
        + table(["reason", "lesions", "lesion views"],
                [(r["reason"], r["lesions"], r["lesion_views"]) for r in ex["by_reason"]] or [("none", 0, 0)])
        + "<h3>Breast density (exams)</h3>"
        + table(["density", "exams"], list(d["density_exams"].items())),
        "<h2>3. Reference standard</h2>" + _rows([
            ("truth", m["reference_standard"]["kind"]), ("generator", m["reference_standard"]["generator"]),
            ("truth schema version", m["reference_standard"]["schema_version"]),
            ("generator seed", m["reference_standard"]["seed"]),
        ]) + "<p>Each truth lesion has a type, a diameter, a laterality and a box per view that shows it "
             "(cad/schemas/truth.schema.json); the same lesion ID in two views is the CC/MLO correspondence.</p>",
        "<h2>4. Scoring method</h2><ul>"
        f"<li><b>Localisation criterion:</b> {esc(crit['localisation'])}.</li>"
        f"<li><b>Analysed lesions:</b> types {esc(', '.join(crit['lesion_types']))}, diameter at least "
        f"{crit['min_diameter_mm']:g} mm; {esc(crit['excluded_lesions'])} (neither true nor false positive).</li>"
        "<li><b>Counting (FROC):</b> each lesion once per view that shows it, rated by its highest-scoring "
        "localising mark; further marks on it are neither true nor false; every mark localising no lesion is a "
        "false mark, including every mark on a lesion-free image. Marks are the views of each finding, scored "
        "with the finding's (fused) score. FPI = false marks / all images. Sensitivity at F FPI is that of the "
        "lowest threshold with at most F false marks per image.</li>"
        "<li><b>AFROC / wAFROC</b> (Chakraborty &amp; Berbaum 2004; Chakraborty 2017): case = exam; a lesion is "
        "the lesion in the breast, rated by its best localisation in either view (unmarked: −∞); a normal exam "
        "(no included lesion) is rated by its highest false mark in any view (none: −∞). FOM = mean of ψ(FP, LL) "
        "over normal exam × lesion pairs (ψ = 1 if LL &gt; FP, ½ if tied, 0 otherwise); wAFROC weights each "
        "abnormal exam equally and its lesions equally within it.</li>"
        "<li><b>Case / breast ROC:</b> a unit is scored by its highest finding score (−∞ without findings) and "
        "is positive when it holds an included lesion; AUC = Wilcoxon statistic (ties ½). Marks on excluded "
        "lesions are not removed here, which is conservative for exams with excluded lesions only.</li>"
        f"<li><b>Confidence intervals:</b> exam-level bootstrap (Efron), {boot['resamples']} resamples, seed "
        f"{boot['seed']}, {esc(boot['interval'])} intervals; the lesions, marks, breasts and images "
        f"of a drawn exam go with it. Computed in {boot['seconds']:.2f} s.</li></ul>",
    ]
    froc = m["froc"]
    rows = [(f"{f:g}", _ci(froc["dual_view_sensitivity_at_fpi"][f"{f:g}"]),
             _ci(froc["single_view_sensitivity_at_fpi"][f"{f:g}"]), _ci(froc["fusion_gain_at_fpi"][f"{f:g}"]),
             m["dual_view"]["threshold_at_fpi"][f"{f:g}"]) for f in FPI_POINTS]
    undefined = boot["undefined_resamples"]
    sections.append(
        "<h2>5. Results</h2><h3>Summary figures of merit (95 % CI)</h3>"
        + table(["figure of merit", "estimate (95 % CI)", "units"], [
            ("sensitivity at the locked threshold",
             _ci({"estimate": op["sensitivity"], "ci95": op["sensitivity_ci95"]}),
             f"{d['included_lesion_views']} lesion views"),
            ("false marks per image at the locked threshold", _ci({"estimate": op["fpi"], "ci95": op["fpi_ci95"]}),
             f"{d['images']} images"),
            ("AFROC FOM", _ci(m["afroc"]),
             f"{m['afroc']['normal_exams']} normal exams × {m['afroc']['lesions']} lesions"),
            ("wAFROC FOM", _ci(m["wafroc"]),
             f"{m['wafroc']['normal_exams']} normal × {m['wafroc']['abnormal_exams']} abnormal exams"),
            ("case-level ROC AUC", _ci(m["roc"]["case"]),
             f"{m['roc']['case']['positive']} positive / {m['roc']['case']['negative']} negative exams"),
            ("breast-level ROC AUC", _ci(m["roc"]["breast"]),
             f"{m['roc']['breast']['positive']} positive / {m['roc']['breast']['negative']} negative breasts"),
        ])
        + (f"<p class=\"note\">Resamples without a normal or positive unit are left out of that interval: "
           f"AFROC {undefined['afroc']}, case AUC {undefined['case_auc']}, breast AUC {undefined['breast_auc']}.</p>"
           if any(undefined.values()) else "")
        + "<h3>FROC: lesion sensitivity (per view) at fixed false marks per image</h3>"
        + table(["FPI", "dual-view (product)", "single-view scoring", "fusion gain (paired)", "threshold"], rows)
        + figure(pngs["froc"], "FROC curve of the product's (dual-view) scores with its 95 % bootstrap band, and the "
                 "same marks scored by their single-view detector scores. Diamond: locked operating point.", 75)
        + figure(pngs["afroc"], "AFROC and wAFROC curves (case = exam); the last segment joins the lowest "
                 "threshold to (1, 1) as in the FOM definition.", 55)
        + figure(pngs["roc"], "Case- and breast-level ROC curves (unit score = highest finding score).", 55)
    )
    sections[-1] += _findability_section(m)
    thresholds = m["subgroup_thresholds"]
    sub = [f"<h2>6. Subgroup analyses</h2><p>Sensitivity per lesion view at the locked threshold "
           f"({thresholds['locked']:.3f}) and at the threshold giving 1 FPI on these data ({fmt(thresholds['1fpi'], 3)}; "
           "re-derived in every bootstrap resample). Size bands: " + esc(", ".join(SIZE_BANDS)) + " (10 and 20 mm in "
           "the middle band). <i>Localising finding</i> tells whether the mark that rated the lesion belongs to a "
           "linked CC/MLO finding or to a single-view finding.</p>"]
    for name, strata in m["subgroups"].items():
        sub.append(f"<h3>{esc(name)}</h3>" + table(
            ["stratum", "lesion views", "lesions", "sensitivity at locked threshold (95 % CI)",
             "sensitivity at 1 FPI (95 % CI)"],
            [(s["stratum"], s["lesion_views"], s["lesions"], _ci(s["sensitivity_at_locked_threshold"]),
              _ci(s["sensitivity_at_1fpi"])) for s in strata]))
    sections.append("".join(sub))
    link = m["linking"]
    sections.append("<h2>7. CC/MLO linking at the locked threshold</h2>" + _rows([
        ("lesions detected in both views", link["lesions_detected_in_both_views"]),
        ("of which linked as one finding (link recall)",
         f"{link['of_which_linked_as_one_finding']} ({fmt(link['link_recall'], 3)})"),
        ("linked findings", link["linked_findings"]),
        ("joining one lesion (link precision)",
         f"{link['linked_findings_joining_one_lesion']} ({fmt(link['link_precision'], 3)})"),
        ("joining different lesions or a lesion and a false mark (link error rate)",
         f"{link['linked_findings_joining_different_lesions_or_a_false_mark']} ({fmt(link['link_error_rate'], 3)})"),
        ("joining two false marks", link["linked_findings_joining_two_false_marks"]),
    ]))
    synthetic = "phantom" in str(m["reference_standard"]["generator"] or "")
    limits = [
        "Synthetic phantom exams: lesion appearance, breast anatomy and density are simulated; these figures do not "
        "predict performance on clinical mammograms." if synthetic else
        "Figures hold for the population, equipment and truth process of this dataset only.",
        f"Small strata give wide intervals; subgroup analyses are descriptive, not powered ({d['exams']} exams).",
        "Bootstrap percentile intervals treat the exams as a random sample; they do not cover reader or "
        "truthing variability.",
        "Only lesions of type " + ", ".join(crit["lesion_types"]) + f" and at least {crit['min_diameter_mm']:g} mm "
        "are analysed; "
        "excluded lesions are counted in section 2.",
    ]
    sections.append("<h2>8. Limitations</h2><ul>" + "".join(f"<li>{esc(x)}</li>" for x in limits) + "</ul>")
    return sections


def write_html(analysis: StandaloneAnalysis, pngs: dict[str, bytes], path: Path, command: str) -> None:
    """The self-contained standalone-performance report."""
    meta = (f"Command: <code>{esc(command)}</code> · evaluated with mammo-cad {esc(cad.__version__)} · "
            f"{esc(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))}")
    path.write_text(page("Standalone performance assessment", _sections(analysis, pngs), meta), encoding="utf-8")


def write_outputs(analysis: StandaloneAnalysis, out: Path, command: str) -> list[Path]:
    """operating_points.csv, froc/afroc/roc .png and .svg and report.html in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_operating_points(analysis, out / "operating_points.csv")
    pngs = write_plots(analysis, out)
    write_html(analysis, pngs, out / "report.html", command)
    return [out / "operating_points.csv", *(out / f"{n}.{e}" for n in PLOTS for e in ("png", "svg")),
            out / "report.html"]
