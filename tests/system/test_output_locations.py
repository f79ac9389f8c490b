"""Every location a verb writes is checked before any work (SRS-PRD-001): an output or state
option that names an existing file (or a folder where a file is wanted) is one line and exit 2,
for every verb the `cad` command has, whichever verbs are added later."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

CAD = [sys.executable, "-m", "cad.cli"]
#: options that name where a verb writes (folders) or what it writes (files)
WRITTEN = ("--out", "--state", "--report", "--json", "--record")


def _verbs() -> list[tuple[str, str, bool]]:
    """(verb, option, whether it names a file) for every written-location option of every verb."""
    from cad.cli import app, load_plugins

    load_plugins()
    found = []

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):  # a group (typer vendors its own click)
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        for param in command.params:
            for option in set(param.opts) & set(WRITTEN):
                found.append((" ".join(path), option, option in ("--json", "--record")))

    walk(typer.main.get_command(app), [])
    return sorted(found)


VERBS = _verbs()


@pytest.mark.req("SRS-PRD-001")
def test_every_verb_that_writes_is_covered() -> None:
    """The verbs a site and QA run all have their written locations found here."""
    verbs = {verb for verb, _, _ in VERBS}
    assert {"detect", "inspect", "batch", "serve", "export", "deidentify", "phantom", "evaluate", "trace", "train",
            "bench", "reader-study", "outcomes import", "audit verify", "release compare"} <= verbs


@pytest.mark.req("SRS-PRD-001")
@pytest.mark.parametrize(("verb", "option", "is_file"), VERBS, ids=[f"{v} {o}" for v, o, _ in VERBS])
def test_an_output_location_of_the_wrong_kind_is_one_line_and_exit_2_before_any_work(
        verb: str, option: str, is_file: bool, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    if is_file:
        wrong.mkdir()  # a folder where a file is written
    else:
        wrong.write_text("a file where a folder is needed")
    from cad.cli import app

    # the option first: it is checked before the verb's other arguments and before any work
    ran = CliRunner().invoke(app, [*verb.split(), option, str(wrong)])
    assert ran.exit_code == 2, ran.output
    (line,) = ran.stderr.strip().splitlines()
    assert line.startswith(f"error: {option} {wrong}: ") and ran.exception is None or isinstance(ran.exception, SystemExit)
    assert ("is a folder" in line) if is_file else ("not a folder" in line)


@pytest.mark.req("SRS-PRD-001")
def test_an_output_folder_inside_a_file_is_refused_before_any_analysis(mass_phantom_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    ran = subprocess.run([*CAD, "detect", str(mass_phantom_dir), "--out", str(blocker / "run1")],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 2
    assert ran.stderr.strip() == f"error: --out {blocker / 'run1'}: {blocker} is not a folder"
    assert "CAD" not in ran.stdout, "refused before the model or any image was read"


@pytest.mark.req("SRS-PRD-001")
def test_help_shows_every_option_whole_at_80_columns() -> None:
    """No option name is cut (`--dicomweb-auth…`) however narrow the terminal."""
    from cad.cli import app, load_plugins

    load_plugins()
    command: Any = typer.main.get_command(app)
    for name, sub in command.commands.items():
        commands = sub.commands.items() if hasattr(sub, "commands") else [("", sub)]
        for sub_name, leaf in commands:
            shown = CliRunner().invoke(app, [name, *([sub_name] if sub_name else []), "--help"], terminal_width=80)
            assert shown.exit_code == 0, shown.output
            assert "…" not in shown.stdout, f"{name} {sub_name}: {shown.stdout}"
            for param in leaf.params:
                for option in param.opts + param.secondary_opts:
                    if option.startswith("--"):
                        assert option in shown.stdout, f"{name} {sub_name}: {option} not shown whole"
