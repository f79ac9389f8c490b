"""Sphinx configuration of the mammo-cad submission document set (`make docs`).

The requirement, risk, software-item and test pages are generated at configuration time by
:mod:`traceability.docs` from the sources of truth (requirements/, risk/,
docs/software-items.yaml, the lock file, the JUnit XML of the last test run, the released
model's manifest, reports/phantom-test). Warnings are errors (`-W` in the Makefile).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: the repository the documents describe (a test may build a copy of docs/ elsewhere)
ROOT = Path(os.environ.get("CAD_DOCS_ROOT") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

import cad  # noqa: E402
from traceability.docs import default_inputs, generate  # noqa: E402
from traceability.matrix import VERDICTS, build_trace  # noqa: E402
from traceability.report import git_revision  # noqa: E402
from traceability.results import OUTCOMES, read_junit  # noqa: E402

project = "mammo-cad"
author = "mammo-cad developers"
copyright = "2026, mammo-cad developers (AGPL-3.0-or-later)"
version = release = cad.__version__

extensions = ["myst_parser", "sphinx_needs", "sphinx.ext.graphviz"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**/_build", "*.yaml"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]
html_theme = "furo"
html_title = f"mammo-cad {release} submission documents"
html_static_path: list[str] = []
html_last_updated_fmt = ""
graphviz_output_format = "svg"

# -- sphinx-needs: the objects of the document set ------------------------------------------
needs_id_regex = r"^[A-Z][A-Z0-9_-]{3,}$"
needs_id_required = True
needs_types = [
    {"directive": "req", "title": "Requirement", "prefix": "SRS-", "color": "#BFD8D2", "style": "node"},
    {"directive": "item", "title": "Software item", "prefix": "SI-", "color": "#DCD3E8", "style": "node"},
    {"directive": "hazard", "title": "Hazard", "prefix": "HAZ-", "color": "#F4C7C3", "style": "node"},
    {"directive": "control", "title": "Risk control", "prefix": "RC-", "color": "#FCE8B2", "style": "node"},
    {"directive": "anomaly", "title": "Known anomaly", "prefix": "ANOM-", "color": "#F6B26B", "style": "node"},
    {"directive": "threat", "title": "Threat", "prefix": "THR-", "color": "#E6B8AF", "style": "node"},
    {"directive": "test", "title": "Test case", "prefix": "TC-", "color": "#D9EAD3", "style": "node"},
]
# every status a generated need can carry: requirement verdicts, control verdicts, test outcomes
# and anomaly states, from the code that assigns them
_STATUSES = sorted({s.replace(" ", "_") for s in (*VERDICTS, *OUTCOMES, "open", "closed")})
needs_fields = {
    "status": {"schema": {"type": "string", "enum": _STATUSES}, "nullable": True},
    "category": {"description": "requirement category", "nullable": True},
    "safety": {"description": "safety relevant (implements a risk control)", "nullable": True},
    "device": {"description": "software item inside the device boundary", "nullable": True},
    "severity": {"description": "ISO 14971 severity level", "nullable": True},
    "residual": {"description": "risk region after control (A, R, U)", "nullable": True},
    "control_type": {"description": "design, protective or information", "nullable": True},
    "stride": {"description": "STRIDE categories of a threat", "nullable": True},
    "flow": {"description": "data flow a threat attacks", "nullable": True},
}
needs_links = {
    "allocated": {"incoming": "realised by", "outgoing": "allocated to"},
    "mitigated_by": {"incoming": "mitigates", "outgoing": "mitigated by"},
    "implements": {"incoming": "implemented by", "outgoing": "implements"},
    "verifies": {"incoming": "verified by", "outgoing": "verifies"},
    "affects": {"incoming": "affected by anomaly", "outgoing": "affects"},
}
needs_flow_engine = "graphviz"
needs_build_json = False

# -- generate the pages from the sources of truth -------------------------------------------
_junit = Path(os.environ.get("CAD_DOCS_JUNIT", ROOT / "reports" / "junit.xml"))
if not _junit.is_file():
    raise RuntimeError(f"{_junit}: no test results; run `make test` first (make docs does)")
_trace = build_trace(read_junit(_junit))
generate(Path(__file__).parent / "generated", default_inputs(_trace, ROOT))
html_context = {"revision": git_revision(ROOT)}
rst_epilog = f".. |revision| replace:: ``{git_revision(ROOT)}``\n"
