"""`cad evaluate` end to end on detected phantom exams (SRS-PERF-*)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CAD = [sys.executable, "-m", "cad.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAD, *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, mass_phantom_dir: Path, phantom_dir: Path) -> Path:
    """Three exams (one with two masses, one with calcification clusters only, one normal), detected
    by the released model and evaluated; the truth files of the two phantom runs are merged."""
    work = tmp_path_factory.mktemp("evaluate")
    result = run("detect", str(mass_phantom_dir), str(phantom_dir), "--out", str(work / "findings"), "--no-overlays")
    assert result.returncode == 0, result.stderr
    truths = [json.loads((d / "truth.json").read_text()) for d in (mass_phantom_dir, phantom_dir)]
    merged = {**truths[0], "exams": [e for t in truths for e in t["exams"]]}
    (work / "truth.json").write_text(json.dumps(merged))
    result = run("evaluate", "--truth", str(work / "truth.json"), "--findings", str(work / "findings"),
                 "--out", str(work / "report"), "--bootstrap", "1000", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return work / "report"


def _ci(value: dict[str, Any]) -> None:
    low, high = value["ci95"]
    assert low is not None and high is not None and low <= value["estimate"] <= high


@pytest.mark.req("SRS-PERF-005", "SRS-PERF-001", "SRS-PERF-003")
def test_metrics_json_keeps_old_keys_and_carries_intervals(report: Path) -> None:
    text = (report / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    for key in ("criteria", "data", "dual_view", "single_view", "fusion_gain", "operating_point", "linking",
                "linking_at_1fpi_here"):
        assert key in metrics
    assert set(metrics["dual_view"]["sensitivity_at_fpi"]) == {"0.125", "0.25", "0.5", "1", "2", "4"}
    assert metrics["data"]["exams"] == 3 and metrics["data"]["exams_with_included_lesions"] == 1
    assert metrics["bootstrap"]["resamples"] == 1000 and metrics["bootstrap"]["seed"] == 3
    for value in (metrics["afroc"], metrics["wafroc"], metrics["roc"]["case"], metrics["roc"]["breast"],
                  *metrics["froc"]["dual_view_sensitivity_at_fpi"].values()):
        _ci(value)
    reasons = {r["reason"]: r["lesions"] for r in metrics["exclusions"]["by_reason"]}
    assert reasons == {"type calcification_cluster not analysed": 2}
    assert metrics["device"]["algorithm"]["model_sha256"]


@pytest.mark.req("SRS-PERF-005")
def test_csv_plots_and_self_contained_html(report: Path) -> None:
    with (report / "operating_points.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    curve = [r for r in rows if r["point"] == "curve"]
    assert curve and [float(r["threshold"]) for r in curve] == sorted((float(r["threshold"]) for r in curve),
                                                                      reverse=True)
    assert {r["point"] for r in rows} >= {"fpi<=0.125", "fpi<=1", "fpi<=4", "locked operating point"}
    for name in ("froc", "afroc", "roc"):
        assert (report / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (report / f"{name}.svg").read_text()
    html = (report / "report.html").read_text()
    for heading in ("Device and model identification", "Data", "Reference standard", "Scoring method", "Results",
                    "Subgroup analyses", "Limitations", "Command:"):
        assert heading in html
    external = [m for m in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html) if not m.startswith("data:")]
    assert external == []
    assert html.count('src="data:image/png;base64,') == 3


@pytest.mark.req("SRS-PERF-006")
def test_report_splits_by_what_is_findable_and_counts_lesions_in_either_view(report: Path) -> None:
    metrics = json.loads((report / "metrics.json").read_text())
    det = metrics["detectability"]
    assert det["lesion_views_recorded"] == metrics["data"]["included_lesion_views"]
    assert det["visible"]["lesion_views"] + det["not_visible"]["lesion_views"] == det["lesion_views_recorded"]
    assert metrics["per_lesion"]["lesions"] == metrics["data"]["included_lesions"]
    html = (report / "report.html").read_text()
    assert "By template-observer visibility (a descriptive stratum)" in html and "Per lesion: localised in either view" in html


@pytest.mark.req("SRS-PERF-001")
def test_findings_of_other_studies_are_one_clear_error(report: Path, tmp_path: Path) -> None:
    truth = json.loads((report.parent / "truth.json").read_text())
    for exam in truth["exams"]:
        exam["study_instance_uid"] = exam["study_instance_uid"] + ".9"
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    result = run("evaluate", "--truth", str(tmp_path / "truth.json"), "--findings", str(report.parent / "findings"),
                 "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "cover none of the 3 exams" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.req("SRS-PERF-007")
def test_gallery_of_found_and_missed_lesions(report: Path, mass_phantom_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    from cad_tools.gallery import TILE, gallery

    counts = gallery(mass_phantom_dir / "truth.json", report.parent / "findings", tmp_path / "g.png",
                     missed=5, found=5)
    masses = [lesion for lesion in json.loads((mass_phantom_dir / "truth.json").read_text())["exams"][0]["lesions"]
              if lesion["type"] == "mass" and lesion["diameter_mm"] >= 8]
    assert counts["found"] + counts["missed"] == sum(len(lesion["views"]) for lesion in masses) > 0
    assert counts["drawn"] == min(5, counts["found"]) + min(5, counts["missed"])
    with Image.open(tmp_path / "g.png") as image:
        assert image.size[0] == 5 * TILE and image.size[1] % TILE == 0
