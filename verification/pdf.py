"""A4 PDF reports drawn with matplotlib only (text, tables split over pages, figures), shared by
the reader-study and change-control reports so that both look alike and need nothing else."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

A4 = (8.27, 11.69)
ROW_HEIGHT = 0.0175  # of the A4 page height


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """A figure as PNG bytes for an HTML report (tight box, no software stamp: reruns are identical)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.15, metadata={"Software": None})
    return buffer.getvalue()


class PdfDocument:
    """A4 pages filled top to bottom with text blocks, matplotlib tables and the curves."""

    def __init__(self, pdf: PdfPages, header: str) -> None:
        self.pdf, self.header = pdf, header
        self.fig: Figure | None = None
        self.y = 0.0

    def _new_page(self) -> None:
        self.close_page()
        self.fig = plt.figure(figsize=A4)
        lines = textwrap.wrap(self.header, 150)
        self.fig.text(0.06, 0.98, "\n".join(lines), fontsize=6.5, color="0.35", va="top", linespacing=1.3)
        self.y = 0.95 - 0.011 * max(0, len(lines) - 1)  # below the header, however many lines it takes

    def close_page(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            plt.close(self.fig)
            self.fig = None

    def _need(self, height: float) -> Figure:
        if self.fig is None or self.y - height < 0.04:
            self._new_page()
        assert self.fig is not None
        return self.fig

    def text(self, text: str, size: float = 9, bold: bool = False, width: int = 105, keep: float = 0.0) -> None:
        """A wrapped paragraph; ``keep`` reserves that much page height below it (headings stay with
        what follows)."""
        lines = textwrap.wrap(text, width) or [""]
        height = len(lines) * size * 1.45 / 72 / A4[1] + 0.008
        fig = self._need(height + keep)
        fig.text(0.06, self.y, "\n".join(lines), fontsize=size, va="top", weight="bold" if bold else "normal",
                 linespacing=1.35)
        self.y -= height

    def table(self, header: Sequence[str], rows: list[list[str]], left_columns: int = 1) -> None:
        """A table, columns as wide as their text, split over pages (header repeated) when long."""
        chars = [max(max(len(str(v)) for v in column), 4) + 2 for column in zip(header, *rows, strict=False)]
        widths = [c / sum(chars) for c in chars]
        width = min(0.88, 0.0085 * sum(chars))
        remaining = rows or [["—"] * len(header)]
        while remaining:
            fits = int((self.y - 0.05) / ROW_HEIGHT) - 1 if self.fig is not None else 0
            if fits < min(3, len(remaining)):
                self._new_page()
                fits = int((self.y - 0.05) / ROW_HEIGHT) - 1
            chunk, remaining = remaining[:fits], remaining[fits:]
            self._draw_table(header, chunk, widths, width, left_columns)

    def _draw_table(self, header: Sequence[str], rows: list[list[str]], widths: Sequence[float], width: float,
                    left_columns: int) -> None:
        assert self.fig is not None
        height = ROW_HEIGHT * (len(rows) + 1)
        ax = self.fig.add_axes((0.06, self.y - height, width, height))
        ax.axis("off")
        tab = ax.table(cellText=rows, colLabels=list(header), colWidths=list(widths), bbox=(0, 0, 1, 1))
        tab.auto_set_font_size(False)
        tab.set_fontsize(7)
        for (r, c), cell in tab.get_celld().items():
            cell.set_linewidth(0.4)
            cell.get_text().set_horizontalalignment("left" if c < left_columns else "right")
            cell.PAD = 0.04
            if r == 0:
                cell.set_facecolor("#eeeeee")
                cell.set_text_props(weight="bold")
        self.y -= height + 0.02

    def heading(self, text: str) -> None:
        self.text(text, size=11, bold=True, keep=0.12)

    def figure(self, fig: Figure, height: float) -> None:
        """A finished matplotlib figure drawn page-wide, ``height`` of the page tall."""
        page = self._need(height)
        image = fig.canvas
        image.draw()
        ax = page.add_axes((0.06, self.y - height, 0.88, height))
        ax.imshow(image.buffer_rgba())
        ax.axis("off")
        self.y -= height + 0.02
