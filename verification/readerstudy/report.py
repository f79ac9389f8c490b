"""The reader-study report: one self-contained HTML file and a PDF with the same content.

Sections: data, method, figures of merit with empirical ROC / wAFROC curves per reader and
treatment, the F (or chi-square) tests, treatment differences with confidence intervals and
the variance components. The HTML renders from the template ``verification/templates/reader_study.html``
(:mod:`verification.html`); the PDF is drawn with matplotlib only (curves and tables on A4 pages), so
neither needs anything else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure, SubFigure

import cad
from verification.html import fmt, png_data, render, sci
from verification.pdf import A4, PdfDocument, png_bytes
from verification.readerstudy.data import Paradigm
from verification.readerstudy.fom import FigureOfMerit, empirical_curve
from verification.readerstudy.mrmc import ANALYSES, Method, ReaderStudyResult

TITLE = "Reader study (MRMC) analysis"

Rows = list[list[Any]]


# --------------------------------------------------------------------------- content (shared by HTML and PDF)


def _data_rows(result: ReaderStudyResult) -> Rows:
    s = result.study
    rows: Rows = [
        ["input", s.source],
        ["paradigm", s.paradigm.value],
        ["figure of merit", result.fom.label],
        ["treatments", f"{s.n_treatments}: {', '.join(s.treatments)}"],
        ["readers", f"{s.n_readers}: {', '.join(s.readers)}"],
        ["cases", f"{s.n_cases} ({s.n_normal} non-diseased, {s.n_abnormal} diseased)"],
    ]
    if s.paradigm is Paradigm.FROC:
        rows.append(["lesions", f"{s.n_lesions} (1–{int(s.lesions_per_case.max())} per diseased case)"])
        marks = int((s.nl > -math.inf).sum() + (s.ll > -math.inf).sum())
        rows.append(["marks", f"{marks} over all treatments and readers"])
    return rows


def _method_text(result: ReaderStudyResult) -> list[str]:
    methods = set(result.methods)
    fom = ("the Wilcoxon (trapezoidal) area under the empirical ROC curve" if result.fom is FigureOfMerit.WILCOXON
           else "the weighted AFROC figure of merit (wAFROC; Chakraborty): highest-rated false positive per "
                "non-diseased case against every lesion, lesions weighted as in the Truth sheet, unmarked "
                "cases and lesions rated −∞")
    text = [f"Figure of merit: {fom}. Case-deletion jackknife over all {result.study.n_cases} cases."]
    if Method.OR in methods:
        text.append("Obuchowski–Rockette (1995) with Hillis' (2007, 2008) denominator degrees of freedom; error "
                    "covariances (Var, Cov1, Cov2, Cov3) from the jackknife. RRRC: F = MS(T) / [MS(TR) + "
                    "J·max(Cov2 − Cov3, 0)]; FRRC: χ² = (I−1)·MS(T) / [Var − Cov1 + (J−1)·max(Cov2 − Cov3, 0)] "
                    "with normal-approximation differences (no df); RRFC: F = MS(T) / MS(TR).")
    if Method.DBM in methods:
        text.append("Dorfman–Berbaum–Metz (1992): ANOVA of jackknife pseudovalues (centred on each reader's "
                    "figure of merit, as RJafroc). RRRC: F = MS(T) / [MS(TR) + max(MS(TC) − MS(TRC), 0)] with "
                    "Hillis' ddf; FRRC: F = MS(T) / MS(TC); RRFC: F = MS(T) / MS(TR).")
    text.append(f"Differences are the reader-averaged figure of merit of the first treatment minus the second; "
                f"{100 * (1 - result.alpha):g}% confidence intervals, two-sided p values. Conventions as "
                "RJafroc 2.1.3 (St, covEstMethod = \"jackknife\").")
    return text


def _fom_table(result: ReaderStudyResult) -> tuple[list[str], Rows]:
    s = result.study
    header = ["treatment", *(f"reader {r}" for r in s.readers), "mean"]
    rows = [[t, *(float(v) for v in result.foms[i]), float(result.foms[i].mean())] for i, t in enumerate(s.treatments)]
    return header, rows


def _test_table(result: ReaderStudyResult) -> tuple[list[str], Rows]:
    header = ["method", "analysis", "statistic", "value", "df (num)", "df (den)", "p", "MS(T)", "MS(error)"]
    rows: Rows = []
    for method, res in result.methods.items():
        for name in ANALYSES:
            t = res.tests[name]
            rows.append([method.value, name, "χ²" if t.is_chisq else "F", t.statistic, f"{t.df_num:g}",
                         "—" if t.df_den is None else fmt(t.df_den, 2), t.p, t.ms_treatment, t.ms_error])
    return header, rows


def _difference_table(result: ReaderStudyResult) -> tuple[list[str], Rows]:
    pct = f"{100 * (1 - result.alpha):g}%"
    header = ["method", "analysis", "difference", "estimate", "std. error", "df", "t or z", "p",
              f"{pct} CI lower", f"{pct} CI upper"]
    rows: Rows = []
    for method, res in result.methods.items():
        for name in ANALYSES:
            for d in res.tests[name].differences:
                rows.append([method.value, name, f"{d.treatment_a} − {d.treatment_b}", d.estimate, d.stderr,
                             "— (z)" if d.df is None else fmt(d.df, 2), d.statistic, d.p, d.ci_lower, d.ci_upper])
    return header, rows


def _variance_table(result: ReaderStudyResult) -> tuple[list[str], Rows]:
    rows: Rows = []
    for method, res in result.methods.items():
        rows += [[method.value, "component", k, v] for k, v in res.variance_components.items()]
        rows += [[method.value, "mean square", f"MS({k})", v] for k, v in res.mean_squares.items()]
    return ["method", "kind", "name", "value"], rows


SCIENTIFIC_COLUMNS = frozenset({"p", "MS(T)", "MS(error)", "value"})
"""Columns whose small values (p values, mean squares, variances) are shown in scientific notation."""


def _display(header: Sequence[str], rows: Rows) -> Rows:
    """Rows with small numbers of the scientific columns as text, the rest unchanged."""
    scientific = [h in SCIENTIFIC_COLUMNS for h in header]
    return [[sci(v) if s else v for v, s in zip(row, scientific, strict=True)] for row in rows]


def _formatted(header: Sequence[str], rows: Rows, digits: int = 4) -> list[list[str]]:
    return [[fmt(v, digits) for v in row] for row in _display(header, rows)]


# --------------------------------------------------------------------------- figures


def _curve_grid(n_treatments: int) -> tuple[int, int]:
    """Rows and columns of curve panels: two per row keeps them legible on an A4 page."""
    ncols = min(n_treatments, 2)
    return math.ceil(n_treatments / ncols), ncols


def draw_curves(result: ReaderStudyResult, fig: Figure | SubFigure) -> None:
    """Empirical curves into ``fig``: one panel per treatment, one colour per reader."""
    s = result.study
    roc = result.fom is FigureOfMerit.WILCOXON
    nrows, ncols = _curve_grid(s.n_treatments)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    colours = plt.get_cmap("tab10" if s.n_readers <= 10 else "tab20")
    for i, treatment in enumerate(s.treatments):
        ax = axes[i // ncols][i % ncols]
        ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls="--")
        for j, reader in enumerate(s.readers):
            x, y = empirical_curve(s, result.fom, i, j)
            ax.plot(x, y, color=colours(j % colours.N), lw=1.4, label=f"reader {reader} ({result.foms[i, j]:.3f})")
        ax.set_title(f"treatment {treatment}: mean {result.foms[i].mean():.3f}", fontsize=10)
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_xlabel("FPF (false-positive fraction)" if roc else "FPF (highest false mark on non-diseased)",
                      fontsize=9)
        if i % ncols == 0:
            ax.set_ylabel("TPF (true-positive fraction)" if roc else "wLLF (weighted lesion fraction)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7, frameon=True)
    for extra in range(s.n_treatments, nrows * ncols):
        axes[extra // ncols][extra % ncols].set_visible(False)
    fig.suptitle(f"Empirical {'ROC' if roc else 'wAFROC'} curves ({result.fom.label} per reader in brackets)",
                 fontsize=11)


def curves_figure(result: ReaderStudyResult) -> Figure:
    """The curves as a figure of their own (for the HTML report and curves.png)."""
    nrows, ncols = _curve_grid(result.study.n_treatments)
    fig = plt.figure(figsize=(4.0 * ncols, 4.3 * nrows), layout="constrained")
    draw_curves(result, fig)
    return fig


# --------------------------------------------------------------------------- HTML


def render_html(result: ReaderStudyResult, curves_png: bytes, command: str, when: datetime) -> str:
    """The HTML document (template ``reader_study.html``; small numbers of the SCIENTIFIC_COLUMNS go
    through its sci filter, as :func:`_display` does for the PDF)."""

    def shown(header: list[str], rows: Rows) -> dict[str, Any]:
        return {"header": header, "rows": rows}

    return render("reader_study.html", title=TITLE, command=command, version=cad.__version__, when=when,
                  data_rows=_data_rows(result), method=_method_text(result), fom=shown(*_fom_table(result)),
                  curve_kind="ROC" if result.fom is FigureOfMerit.WILCOXON else "wAFROC", curves=png_data(curves_png),
                  tests=shown(*_test_table(result)), differences=shown(*_difference_table(result)),
                  variance=shown(*_variance_table(result)), scientific=sorted(SCIENTIFIC_COLUMNS))


# --------------------------------------------------------------------------- PDF


class _PdfPages(PdfDocument):
    """The shared A4 page filler, plus the reader-study curves."""

    def curves(self, result: ReaderStudyResult, title: str) -> None:
        """The curves on a page of their own, page-wide, under a section title."""
        self._new_page()
        self.heading(title)
        assert self.fig is not None
        nrows, ncols = _curve_grid(result.study.n_treatments)
        height = min(self.y - 0.04, 0.92 * A4[0] / A4[1] * 4.3 * nrows / (4.0 * ncols) + 0.03)
        box = self.y  # the curves fill [box - height, box] of the page height
        _, area, _ = self.fig.subfigures(3, 1, height_ratios=[1 - box, height, box - height])
        area.set_facecolor("none")
        draw_curves(result, area)
        area.subplots_adjust(left=0.1, right=0.96, bottom=0.08 / nrows, top=1 - 0.2 / nrows, wspace=0.15,
                             hspace=0.3)
        self.y = box - height - 0.02


def write_pdf(result: ReaderStudyResult, path: Path, command: str, when: datetime) -> None:
    """The PDF report (matplotlib only; no creation date in the metadata)."""
    header = f"{command} · mammo-cad {cad.__version__} · {when.strftime('%Y-%m-%d %H:%M UTC')}"
    metadata = {"Title": TITLE, "Creator": f"mammo-cad {cad.__version__}", "CreationDate": None}
    pct = f"{100 * (1 - result.alpha):g}%"
    with PdfPages(path, metadata=metadata) as pdf:
        pages = _PdfPages(pdf, header)
        pages.text(TITLE, size=15, bold=True)
        pages.heading("1. Data")
        pages.table(["item", "details"], _formatted(["item", "details"], _data_rows(result)), left_columns=2)
        pages.heading("2. Method")
        for paragraph in _method_text(result):
            pages.text(paragraph)
        pages.heading("3. Figures of merit")
        header_f, rows_f = _fom_table(result)
        pages.table(header_f, _formatted(header_f, rows_f))
        pages.curves(result, "Empirical curves")
        pages.heading("4. Tests of equal treatment figures of merit")
        header_t, rows_t = _test_table(result)
        pages.table(header_t, _formatted(header_t, rows_t), left_columns=3)
        pages.heading("5. Treatment differences")
        header_d, rows_d = _difference_table(result)
        pages.table([h.replace(f"{pct} ", "") for h in header_d], _formatted(header_d, rows_d), left_columns=3)
        pages.text(f"{pct} confidence intervals. FRRC differences of the OR method use the normal approximation "
                   "(z, no df).", size=8)
        pages.heading("6. Variance components and mean squares")
        header_v, rows_v = _variance_table(result)
        pages.table(header_v, _formatted(header_v, rows_v, digits=6), left_columns=3)
        pages.close_page()


# --------------------------------------------------------------------------- entry point


def write_report(result: ReaderStudyResult, out: Path, command: str) -> list[Path]:
    """Write ``reader_study.html``, ``reader_study.pdf`` and ``curves.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    when = datetime.now(UTC)
    fig = curves_figure(result)
    try:
        png = png_bytes(fig)
    finally:
        plt.close(fig)
    (out / "curves.png").write_bytes(png)
    html_path, pdf_path = out / "reader_study.html", out / "reader_study.pdf"
    html_path.write_text(render_html(result, png, command, when), encoding="utf-8")
    write_pdf(result, pdf_path, command, when)
    return [html_path, pdf_path, out / "curves.png"]
