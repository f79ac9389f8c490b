"""`cad reader-study` end to end, run as a user runs it (SRS-MRMC-002, -007, -008)."""

from __future__ import annotations

import base64
import html as html_text
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

CAD = [sys.executable, "-m", "cad.cli"]
DATA = Path(__file__).parents[1] / "data" / "reader-study"
SCHEMA = json.loads((Path(__file__).parents[2] / "cad" / "schemas" / "reader_study.schema.json").read_text())


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAD, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.req("SRS-MRMC-007", "SRS-MRMC-008")
def test_froc_study_json_and_report(tmp_path: Path) -> None:
    out, report = tmp_path / "results" / "froc.json", tmp_path / "report"
    done = run("reader-study", str(DATA / "froc_example.xlsx"), "--fom", "wafroc", "--method", "both",
               "--json", str(out), "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result = json.loads(out.read_text())
    jsonschema.validate(result, SCHEMA)
    assert result["treatments"] == ["4", "5"] and result["readers"] == ["1", "3", "4", "5"]
    assert set(result["analyses"]) == {"OR", "DBM"} and set(result["variance_components"]) == {"OR", "DBM"}
    assert result["analyses"]["OR"]["FRRC"]["differences"][0]["df"] is None
    assert "RRRC" in done.stdout and "4 - 5" in done.stdout

    html = (report / "reader_study.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "reader-study" in html and "Hillis" in html
    assert not re.search(r'(src|href)="(?!data:)', html), "the HTML must not refer to other files"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 1 and base64.b64decode(images[0]).startswith(b"\x89PNG")
    for text in ("100 non-diseased, 100 diseased", "142", "wAFROC", "Variance components", "RRFC", "var_tc"):
        assert text in html
    pdf = (report / "reader_study.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 3


@pytest.mark.req("SRS-MRMC-008")
def test_report_shows_ids_file_and_command_as_text_never_as_markup(tmp_path: Path) -> None:
    """Reader and treatment IDs, the file name and the command line are the user's text: the report
    escapes them, once (an entity typed in an ID reads back as typed)."""
    lines = (DATA / "vandyke_roc.csv").read_text().splitlines()
    readers, treatments = {"0": "<script>alert(1)</script>"}, {"0": "A&amp;B", "1": "<i>new</i>"}
    rows = [lines[0]]
    for line in lines[1:]:
        reader, treatment, *rest = line.split(",")
        rows.append(",".join([readers.get(reader, reader), treatments.get(treatment, treatment), *rest]))
    study, report = tmp_path / "ratings <b>.csv", tmp_path / "report"
    study.write_text("\n".join(rows) + "\n")
    done = run("reader-study", str(study), "--fom", "wilcoxon", "--json", str(tmp_path / "vd.json"),
               "--report", str(report))
    assert done.returncode == 0, done.stderr
    html = (report / "reader_study.html").read_text()
    assert "<script>" not in html and "<i>" not in html and "<b>" not in html
    shown = html_text.unescape(html)
    assert "reader <script>alert(1)</script>" in shown and "A&amp;B" in shown and "<i>new</i>" in shown
    assert "ratings <b>.csv" in shown and shown.count("ratings <b>.csv") == 2  # the input row and the command


@pytest.mark.req("SRS-MRMC-007")
def test_roc_study_default_method_is_or(tmp_path: Path) -> None:
    out = tmp_path / "vd.json"
    done = run("reader-study", str(DATA / "vandyke_roc.csv"), "--fom", "wilcoxon", "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    jsonschema.validate(result, SCHEMA)
    assert list(result["analyses"]) == ["OR"]
    assert result["analyses"]["OR"]["RRRC"]["f"] == pytest.approx(4.456318693157, rel=1e-9)


@pytest.mark.req("SRS-MRMC-002")
@pytest.mark.parametrize(("args", "problem"), [
    (("--fom", "wafroc"), "{file}: holds ROC data; --fom wafroc needs FROC data (use --fom wilcoxon)"),
    (("--fom", "auc"), "--fom auc: use wilcoxon or wafroc"),
    (("--fom", "wilcoxon", "--method", "anova"), "--method anova: use or, dbm or both"),
])
def test_bad_use_is_one_error_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], problem: str) -> None:
    out = tmp_path / "out.json"
    done = run("reader-study", str(DATA / "vandyke_roc.csv"), *args, "--json", str(out))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: " + problem.format(file=DATA / "vandyke_roc.csv")]
    assert not out.exists()


@pytest.mark.req("SRS-MRMC-002")
def test_corrupt_input_is_one_error_line_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "study.xlsx"
    shutil.copy(DATA / "vandyke_roc.csv", bad)
    bad.write_text(bad.read_text().replace("0,0,5,0,", "0,0,5,0,five", 1))
    done = run("reader-study", str(bad), "--fom", "wilcoxon", "--json", str(tmp_path / "out.json"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: {bad}: line 6: rating 'five5.000000' is not a number"]
    assert "Traceback" not in done.stderr + done.stdout
    missing = run("reader-study", str(tmp_path / "nope.csv"), "--fom", "wilcoxon", "--json", str(tmp_path / "o.json"))
    assert (missing.returncode, missing.stderr.strip()) == (2, f"error: {tmp_path / 'nope.csv'}: no such file or folder")
