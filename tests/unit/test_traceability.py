"""Requirement tagging is enforced (SRS-PRD-003) and the dependency lock is exact (SRS-PRD-002)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

from traceability.requirements import RequirementsError, load_requirements

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.req("SRS-PRD-003")
def test_untagged_test_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_untagged():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "traceability.pytest_plugin", "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*test_untagged: no @pytest.mark.req(...) tag*"])


@pytest.mark.req("SRS-PRD-003")
def test_unknown_requirement_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_y=(
            "import pytest\n"
            "@pytest.mark.req('SRS-NOPE-999')\n"
            "def test_bad():\n    assert True\n"
        )
    )
    result = pytester.runpytest_subprocess("-p", "traceability.pytest_plugin", "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*test_bad: unknown requirement SRS-NOPE-999*"])


@pytest.mark.req("SRS-PRD-003")
def test_known_tag_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_z="import pytest\n@pytest.mark.req('SRS-PRD-003')\ndef test_ok():\n    assert 1 + 1 == 2\n"
    )
    result = pytester.runpytest_subprocess("-p", "traceability.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.req("SRS-PRD-003")
def test_malformed_requirement_files_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "requirements:\n"
        "  - {id: SRS-X-1, title: t, category: functional, text: t, rationale: r, acceptance: a}\n"
        "  - {id: SRS-ABC-001, title: t, category: functional, text: t, rationale: r}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "requirements:\n"
        "  - {id: SRS-ABC-002, title: t, category: functional, text: t, rationale: r, acceptance: a}\n"
        "  - {id: SRS-ABC-002, title: t, category: nonsense, text: t, rationale: r, acceptance: a}\n"
    )
    with pytest.raises(RequirementsError) as info:
        load_requirements(tmp_path)
    message = str(info.value)
    assert "'SRS-X-1' is not SRS-<AREA>-<NNN>" in message
    assert "missing acceptance" in message
    assert "duplicate id SRS-ABC-002" in message
    assert "category 'nonsense' is not one of" in message


@pytest.mark.req("SRS-PRD-003")
def test_repository_requirements_load() -> None:
    requirements = load_requirements()
    assert {"SRS-ING-001", "SRS-GEO-002", "SRS-PHA-004", "SRS-PRD-003"} <= set(requirements)


@pytest.mark.req("SRS-PRD-002")
def test_lock_file_pins_exact_versions_that_are_installed() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "locked-dependencies.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines, "lock file is empty"
    pins: dict[str, str] = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-!]+)", line)
        assert match, f"not an exact pin: {line}"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    assert pins["torch"].startswith("2.14.")
    assert pins["torchvision"].startswith("0.29.")
    for name in ("pydicom", "highdicom", "numpy", "scipy", "pillow", "typer", "rich", "pytest"):
        assert name in pins, f"{name} is not locked"
    mismatched = {
        name: (version, metadata.version(name))
        for name, version in pins.items()
        if metadata.version(name) != version
    }
    assert not mismatched, f"installed versions differ from the lock: {mismatched}"
