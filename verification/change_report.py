"""The change-control report: verdict.json rendered as one self-contained HTML file (template
``verification/templates/change.html``) and a PDF with the same content (style of the standalone
report), and the release-notes entry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

import cad
from verification.html import fmt, interval, png_data, render
from verification.pdf import PdfDocument, png_bytes

TITLE = "Model change: acceptance under the pre-specified protocol"
CRITERIA_HEADER = ["ID", "endpoint", "released", "candidate", "difference", "CI", "margin", "result"]
SUBGROUP_HEADER = ["stratum", "lesion views", "released", "candidate", "difference", "CI", "result"]


def _ci(c: dict[str, Any]) -> str:
    return interval(c["ci"])


def _result(c: dict[str, Any]) -> str:
    if "qualifies" in c and not c["qualifies"]:
        return c["why"]
    return "pass" if c["passed"] else f"FAIL: {c['why']}"


def _short(c: dict[str, Any]) -> str:
    if "qualifies" in c and not c["qualifies"]:
        return "reported only"
    return "pass" if c["passed"] else "FAIL"


def criteria_rows(verdict: dict[str, Any]) -> list[list[Any]]:
    return [[c["id"], c["title"], c["released"], c["candidate"], c["difference"], _ci(c), f"{c['margin']:+g}",
             _result(c)] for c in verdict["criteria"]]


def subgroup_rows(verdict: dict[str, Any]) -> list[list[Any]]:
    return [[s["id"].split(":", 1)[1].replace(":", " = "), s["lesion_views"], s["released"], s["candidate"],
             s["difference"], _ci(s), _result(s)] for s in verdict["subgroups"]]


def forest_plot(verdict: dict[str, Any]) -> Figure:
    """Each endpoint's paired difference with its interval against its margin (the worse side
    shaded)."""
    rows = verdict["criteria"]
    fig, axes = plt.subplots(len(rows), 1, figsize=(7.5, 0.62 * len(rows) + 0.6), squeeze=False)
    for ax, c in zip(axes[:, 0], rows):
        low, high = c["ci"]
        margin = c["margin"]
        values = [v for v in (low, high, c["difference"], margin, 0.0) if v is not None]
        span = max(abs(v) for v in values) * 1.25 or 0.05
        ax.set_xlim(-span, span)
        if c["better"] == "higher":
            ax.axvspan(-span, margin, color="#f4cccc")
        else:
            ax.axvspan(margin, span, color="#f4cccc")
        ax.axvline(0, color="0.5", lw=0.8)
        ax.axvline(margin, color="#cc0000", lw=1, ls="--")
        if low is not None and high is not None:
            ax.plot([low, high], [0, 0], color="black", lw=2)
        if c["difference"] is not None:
            ax.plot([c["difference"]], [0], "o", color="#1f4e9c" if c["passed"] else "#cc0000")
        ax.set_yticks([])
        ax.set_ylabel(c["id"], rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{c['title']} (candidate - released; margin {margin:+g})", fontsize=7.5, loc="left")
    fig.tight_layout()
    return fig


def _data_rows(verdict: dict[str, Any]) -> list[list[Any]]:
    p, d, r, c = verdict["protocol"], verdict["data"], verdict["released"], verdict["candidate"]
    sets = "; ".join(f"{s['name']} (seed {s['seed']}, {s['exams']} exams)" for s in d["sets"])
    return [
        ["protocol", f"{p['id']} version {p['version']} (SHA-256 {p['sha256'][:16]}…)"],
        ["released model", f"{r['algorithm'].get('model_name')} {r['algorithm']['version']}, weights "
                           f"{r['algorithm']['model_sha256'][:16]}…, threshold {r['operating_point']['threshold']}"],
        ["candidate model", f"{c['algorithm'].get('model_name')} {c['algorithm']['version']}, weights "
                            f"{c['algorithm']['model_sha256'][:16]}…, threshold {c['operating_point']['threshold']}"],
        ["sequestered data", f"{sets}: {d['exams']} exams, {d['images']} images, {d['included_lesion_views']} "
                             "included lesion views"],
        ["statistics", f"paired exam-level bootstrap, {verdict['bootstrap']['resamples']} resamples, seed "
                       f"{verdict['bootstrap']['seed']}, {verdict['bootstrap']['interval']} interval"],
    ]


def _decision_text(verdict: dict[str, Any]) -> str:
    if verdict["verdict"] == "accepted":
        return "ACCEPTED: every endpoint and every qualifying subgroup is non-inferior within its margin."
    return f"REJECTED: failing criteria {', '.join(verdict['failed_criteria'])}."


def render_html(verdict: dict[str, Any], command: str, when: datetime) -> str:
    """The HTML document (template ``change.html``)."""
    forest = forest_plot(verdict)
    try:
        png = png_bytes(forest, dpi=130)
    finally:
        plt.close(forest)
    return render("change.html", title=TITLE, command=command, version=cad.__version__, when=when,
                  decision=_decision_text(verdict), data_rows=_data_rows(verdict),
                  criteria_header=CRITERIA_HEADER, criteria_rows=criteria_rows(verdict),
                  subgroup_header=SUBGROUP_HEADER, subgroup_rows=subgroup_rows(verdict), forest=png_data(png))


def write_html(verdict: dict[str, Any], path: Path, command: str, when: datetime) -> Path:
    path.write_text(render_html(verdict, command, when))
    return path


def write_pdf(verdict: dict[str, Any], path: Path, command: str, when: datetime) -> Path:
    header = f"{command} · mammo-cad {cad.__version__} · {when.strftime('%Y-%m-%d %H:%M UTC')}"
    metadata = {"Title": TITLE, "Creator": f"mammo-cad {cad.__version__}", "CreationDate": None}
    with PdfPages(path, metadata=metadata) as pdf:
        doc = PdfDocument(pdf, header)
        doc.text(TITLE, size=14, bold=True)
        doc.text(_decision_text(verdict), size=10, bold=True)
        doc.heading("1. Protocol, models and data")
        doc.table(["item", "details"], [[str(a), str(b)] for a, b in _data_rows(verdict)], left_columns=2)
        doc.heading("2. Endpoints (non-inferiority)")
        doc.text("An endpoint passes when the bound of the paired difference's interval on the worse side clears its "
                 "margin; the failing bound of each FAIL is in the HTML report and verdict.json.", size=8)
        doc.table(CRITERIA_HEADER, [[c["id"], c["title"][:40], fmt(c["released"]), fmt(c["candidate"]),
                                     fmt(c["difference"]), _ci(c), f"{c['margin']:+g}", "pass" if c["passed"] else "FAIL"]
                                    for c in verdict["criteria"]], left_columns=2)
        fig = forest_plot(verdict)
        doc.figure(fig, min(0.5, 0.045 * len(verdict["criteria"]) + 0.06))
        plt.close(fig)
        doc.heading("3. Subgroups (sensitivity at the operating point)")
        doc.table(SUBGROUP_HEADER, [[fmt(v) for v in row[:-1]] + [_short(s)]
                                    for row, s in zip(subgroup_rows(verdict), verdict["subgroups"])])
        doc.close_page()
    return path


def release_notes_entry(verdict: dict[str, Any]) -> str:
    """Markdown lines for the release notes: decision, protocol, models and each endpoint."""
    c = verdict["candidate"]["algorithm"]
    r = verdict["released"]["algorithm"]
    lines = [f"- {c.get('model_name')} (weights {c['model_sha256'][:12]}) against {r.get('model_name')} "
             f"(weights {r['model_sha256'][:12]}) under {verdict['protocol']['id']} "
             f"{verdict['protocol']['version']}: **{verdict['verdict']}**"]
    for crit in verdict["criteria"]:
        lines.append(f"  - {crit['id']} {crit['title']}: {fmt(crit['released'])} -> {fmt(crit['candidate'])}, "
                     f"difference {fmt(crit['difference'])} {_ci(crit)}, margin {crit['margin']:+g}: "
                     f"{'pass' if crit['passed'] else 'fail'}")
    return "\n".join(lines) + "\n"


def write_report(verdict: dict[str, Any], out: Path, command: str) -> list[Path]:
    when = datetime.now(UTC)
    out.mkdir(parents=True, exist_ok=True)
    notes = out / "release-notes-entry.md"
    notes.write_text(release_notes_entry(verdict))
    return [write_html(verdict, out / "report.html", command, when), write_pdf(verdict, out / "report.pdf", command, when),
            notes]
