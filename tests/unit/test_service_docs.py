"""The service's documentation names only routes the service has, and every route it has
(SRS-SVC-008): docs/service.md once listed a `/status` route that did not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cad.service.api import create_app

ROOT = Path(__file__).resolve().parents[2]
#: a route in the HTTP API table: | `GET /studies/{uid}` | ...
ROW = re.compile(r"^\| `(GET|POST|PUT|DELETE) (/[^`? ]*)")


def _documented() -> set[tuple[str, str]]:
    text = (ROOT / "docs" / "service.md").read_text()
    table = text.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    return {(m.group(1), re.sub(r"\{[^}]+\}", "{}", m.group(2))) for line in table.splitlines() if (m := ROW.match(line))}


@pytest.mark.req("SRS-SVC-008")
def test_the_documented_routes_are_the_service_routes(tmp_path: Path) -> None:
    app = create_app(tmp_path / "state", "a-token-of-thirty-two-characters", lambda: {"running": True})
    served = {(method, re.sub(r"\{[^}]+\}", "{}", route.path))  # type: ignore[attr-defined]
              for route in app.routes for method in getattr(route, "methods", ()) or ()
              if getattr(route, "include_in_schema", False) and method != "HEAD"}
    documented = _documented()
    assert ("GET", "/ui/...") not in served
    assert documented - {("GET", "/ui/...")} == served
    assert "/status" not in (ROOT / "docs" / "service.md").read_text(), "a route the service never had"
