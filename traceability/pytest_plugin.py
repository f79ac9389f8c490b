"""pytest plugin: every test must verify a known requirement, named by @pytest.mark.req.

A collected test without a ``req`` mark, or naming an ID that requirements/*.yaml does not
define, fails the whole run before any test executes. The IDs are recorded as JUnit
properties (``req``) so traceability can join tests to requirements from the JUnit XML.
"""

from __future__ import annotations

import pytest

from traceability.requirements import load_requirements


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "req(*ids): software requirement IDs (SRS-...) this test verifies"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    known = load_requirements()
    problems: list[str] = []
    for item in items:
        ids = [rid for mark in item.iter_markers(name="req") for rid in mark.args]
        if not ids:
            problems.append(f"{item.nodeid}: no @pytest.mark.req(...) tag")
            continue
        unknown = [rid for rid in ids if rid not in known]
        if unknown:
            problems.append(f"{item.nodeid}: unknown requirement {', '.join(unknown)}")
        for rid in ids:
            item.user_properties.append(("req", rid))
    if problems:
        raise pytest.UsageError(
            "requirement tagging check failed:\n  " + "\n  ".join(problems)
        )
