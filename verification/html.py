"""Self-contained HTML reports: one file, figures embedded, readable printed or on screen.

Shared by the standalone-performance and reader-study reports so that both look alike and
neither needs anything beside the HTML file.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; max-width: 1000px; margin: 2em auto;
       color: #111; line-height: 1.4; font-size: 14px; }
h1 { font-size: 1.6em; border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #999; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .92em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: right; }
th { background: #eee; } td.l, th.l { text-align: left; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #444; }
.meta { color: #444; font-size: .9em; } .note { background: #f6f6f0; padding: .5em .8em; }
@media print { body { margin: 0; max-width: none; } h2 { page-break-after: avoid; } }
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers to fixed digits, None to an em dash, anything else as text."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 4, left_columns: int = 1) -> str:
    """An HTML table; the first ``left_columns`` columns are labels (left-aligned)."""
    head = "".join(f'<th class="{"l" if i < left_columns else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if i < left_columns else ""}">{esc(fmt(v, digits))}</td>'
                         for i, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(png: bytes, caption: str, width_percent: int = 90) -> str:
    """A PNG embedded as a data URI, with its caption."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{esc(caption)}" style="width:{width_percent}%" '
            f'src="data:image/png;base64,{data}"><figcaption>{esc(caption)}</figcaption></figure>')


def page(title: str, sections: Iterable[str], meta: str = "") -> str:
    """The whole document: title, a line of provenance (command, version, date) and sections."""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"meta\">{meta}</p>" + "".join(sections) + "</body></html>")
