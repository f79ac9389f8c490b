"""Test results from pytest's JUnit XML, with the requirement IDs the tagging plugin recorded."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

#: outcomes pytest's JUnit XML can tell apart (a strict xfail that passes is a failure there; a
#: non-strict one is indistinguishable from a pass)
PASSED, FAILED, SKIPPED, XFAILED = "passed", "failed", "skipped", "xfailed"
OUTCOMES = (PASSED, FAILED, SKIPPED, XFAILED)


@dataclass(frozen=True)
class TestResult:
    node_id: str
    outcome: str
    requirements: tuple[str, ...]
    seconds: float
    message: str

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED


@dataclass(frozen=True)
class TestRun:
    results: tuple[TestResult, ...]
    timestamp: str
    hostname: str
    source: str

    def of(self, requirement: str) -> list[TestResult]:
        return [r for r in self.results if requirement in r.requirements]


def _node_id(classname: str, name: str) -> str:
    parts = classname.split(".")
    # tests.system.test_detect[.Class] -> tests/system/test_detect.py[::Class]::name
    for cut in range(len(parts), 0, -1):
        if parts[cut - 1].startswith("test_"):
            module = "/".join(parts[:cut]) + ".py"
            return "::".join([module, *parts[cut:], name])
    return f"{classname}::{name}"


def read_junit(path: Path) -> TestRun:
    """Every test case of a pytest JUnit XML file with its outcome and requirement tags."""
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:  # a SyntaxError, not a ValueError: name the file instead
        raise ValueError(f"{path}: not well-formed XML ({exc})") from None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        raise ValueError(f"{path}: no testsuite element")
    results = []
    for case in suite.iter("testcase"):
        requirements = tuple(p.get("value", "") for p in case.iter("property") if p.get("name") == "req")
        outcome, message = PASSED, ""
        for tag in ("failure", "error"):
            element = case.find(tag)
            if element is not None:
                outcome, message = FAILED, element.get("message", "")
        skipped = case.find("skipped")
        if skipped is not None:
            kind = skipped.get("type", "")
            outcome = XFAILED if kind == "pytest.xfail" else SKIPPED
            message = skipped.get("message", "")
        results.append(TestResult(_node_id(case.get("classname", ""), case.get("name", "")), outcome, requirements,
                                  float(case.get("time", 0) or 0), message))
    return TestRun(tuple(results), suite.get("timestamp", ""), suite.get("hostname", ""), str(path))
