"""Self-contained HTML reports: one file, figures embedded, readable printed or on screen.

The shared renderer of the development and QA reports (`cad evaluate`, `cad reader-study`,
`cad release compare`, `cad trace`), so that all look alike and none needs anything beside the
HTML file. Each report is a Jinja2 template in ``verification/templates/`` extending
``base.html`` (the page skeleton, the style, the title and a line of provenance) and using the
macros of ``_macros.html`` (tables with left-aligned label columns, embedded PNG figures,
key/value rows). The Python side gives plain values; the templates do all the markup, with
autoescaping on (a command line, file name or requirement title can never become markup) and
undefined names an error rather than an empty string.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers to fixed digits, None to an em dash, anything else as text."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ci(value: dict[str, Any], digits: int = 3) -> str:
    """'0.846 (0.600, 1.000)' from {'estimate', 'ci95'}; em dashes where undefined."""
    low, high = value["ci95"]
    return f"{fmt(value['estimate'], digits)} ({fmt(low, digits)}, {fmt(high, digits)})"


def interval(bounds: Sequence[Any], digits: int = 4) -> str:
    """'[-0.0123, 0.0456]' from (low, high); em dashes where undefined."""
    low, high = bounds
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def sci(value: Any) -> Any:
    """Small non-zero numbers (p values, mean squares, variances) in scientific notation; the rest unchanged."""
    if isinstance(value, float) and value != 0 and math.isfinite(value) and abs(value) < 1e-3:
        return f"{value:.3e}"
    return value


def png_data(png: bytes) -> str:
    """PNG bytes as the base64 text of a data URI (what the figure macro embeds)."""
    return base64.b64encode(png).decode("ascii")


@cache
def environment() -> Environment:
    """The one Jinja2 environment of the reports (templates in the package, autoescaped, strict)."""
    env = Environment(loader=PackageLoader("verification", "templates"), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    env.filters["fmt"] = fmt
    env.filters["ci"] = ci
    env.filters["interval"] = interval
    env.filters["sci"] = sci
    return env


def render(template: str, **context: Any) -> str:
    """The document ``template`` (a file of ``verification/templates/``) renders from ``context``."""
    return environment().get_template(template).render(**context)
