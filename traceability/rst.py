"""reStructuredText helpers of the generated document pages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any


def literal(text: str) -> str:
    """Markdown-style `code` in the YAML to RST ``code``; escapes stray markup characters."""
    text = re.sub(r"(?<!`)`([^`\n]+)`(?!`)", r"``\1``", text)
    return text.replace("*", "\\*").replace("|", "\\|")


def heading(text: str, char: str = "=") -> str:
    return f"{text}\n{char * max(len(text), 3)}\n\n"


def indent(text: str, spaces: int = 3) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line.strip() else "" for line in text.splitlines())


def list_table(header: Sequence[str], rows: Iterable[Sequence[Any]], widths: Sequence[int] | None = None,
               title: str = "") -> str:
    """An RST list-table (cells are literal-converted text)."""
    out = [f".. list-table:: {title}".rstrip(), "   :header-rows: 1", "   :class: longtable"]
    if widths:
        out.append(f"   :widths: {' '.join(str(w) for w in widths)}")
    out.append("")
    for row in [list(header), *[list(r) for r in rows]]:
        for k, cell in enumerate(row):
            text = literal(str(cell)) if str(cell).strip() else "—"
            lines = text.splitlines() or ["—"]
            out.append(("   * - " if k == 0 else "     - ") + lines[0])
            out.extend("       " + line for line in lines[1:])
    return "\n".join(out) + "\n\n"
