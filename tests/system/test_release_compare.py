"""`cad release compare`: model change control under the pre-specified protocol (SRS-MOD-005)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cad.detect.locked import DEFAULT_MODEL_DIR
from verification.change_control import ProtocolError, load_protocol

REPO = Path(__file__).resolve().parents[2]
CAD = [sys.executable, "-m", "cad.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAD, *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's protocol with its endpoints and margins, on a small phantom set."""
    data = yaml.safe_load((REPO / "docs" / "change-protocol.yaml").read_text())
    data["test_data"]["sets"] = [{"name": "small", "seed": 505, "exams": 6, "spacing_mm": 0.2}]
    data["analysis"]["bootstrap"]["resamples"] = 300
    data["subgroups"]["min_lesion_views"] = 1000  # a small set: every stratum reported, none judged
    path = tmp_path_factory.mktemp("protocol") / "protocol.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sequestered")


def candidate(tmp_path: Path, threshold: float | None = None) -> Path:
    folder = tmp_path / "candidate"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    if threshold is not None:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["operating_point"]["threshold"] = threshold
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder


@pytest.mark.req("SRS-MOD-005")
def test_an_identical_candidate_is_accepted(protocol: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("release", "compare", "--released", str(DEFAULT_MODEL_DIR), "--candidate", str(candidate(tmp_path)),
                 "--protocol", str(protocol), "--out", str(out), "--data", str(data),
                 "--record", str(tmp_path / "acceptance" / "same.json"))
    assert result.returncode == 0, result.stderr
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["verdict"] == "accepted" and verdict["failed_criteria"] == []
    assert [c["id"] for c in verdict["criteria"]] == [f"E{k}" for k in range(1, 8)]
    for criterion in verdict["criteria"]:
        assert criterion["passed"] and criterion["difference"] == 0.0 and criterion["ci"] == [0.0, 0.0]
    assert verdict["data"]["exams"] == 6 and verdict["subgroups"]
    assert (tmp_path / "acceptance" / "same.json").read_text() == (out / "verdict.json").read_text()
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF") and "ACCEPTED" in (out / "report.html").read_text()
    assert "**accepted**" in (out / "release-notes-entry.md").read_text()
    assert len(list((out / "findings" / "candidate").rglob("findings.json"))) == 6


@pytest.mark.req("SRS-MOD-005")
def test_a_raised_threshold_is_rejected_naming_the_sensitivity_endpoint(protocol: Path, data: Path,
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("release", "compare", "--released", str(DEFAULT_MODEL_DIR),
                 "--candidate", str(candidate(tmp_path, threshold=0.97)),
                 "--protocol", str(protocol), "--out", str(out), "--data", str(data))
    assert result.returncode == 1, result.stderr
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["verdict"] == "rejected" and "E1" in verdict["failed_criteria"]
    e1 = next(c for c in verdict["criteria"] if c["id"] == "E1")
    assert e1["candidate"] < e1["released"] and e1["ci"][0] < e1["margin"] and not e1["passed"]
    assert result.stderr.strip().splitlines()[-1].startswith("error: candidate rejected: E1")


@pytest.mark.req("SRS-MOD-005")
def test_a_bad_protocol_or_changed_test_data_is_a_usage_error(protocol: Path, data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(protocol.read_text().replace("margin: -0.05", "margn: -0.05"))
    with pytest.raises(ProtocolError, match="unknown key"):
        load_protocol(broken)
    result = run("release", "compare", "--released", str(DEFAULT_MODEL_DIR), "--candidate", str(DEFAULT_MODEL_DIR),
                 "--protocol", str(broken), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "unknown key" in result.stderr and "Traceback" not in result.stderr
    pinned = yaml.safe_load(protocol.read_text())
    pinned["test_data"]["sets"][0]["truth_sha256"] = "0" * 64
    changed = tmp_path / "pinned.yaml"
    changed.write_text(yaml.safe_dump(pinned))
    (data / "small").mkdir(parents=True, exist_ok=True)
    result = run("release", "compare", "--released", str(DEFAULT_MODEL_DIR), "--candidate", str(DEFAULT_MODEL_DIR),
                 "--protocol", str(changed), "--out", str(tmp_path / "o2"), "--data", str(data))
    assert result.returncode == 2 and "is not the sequestered set's" in result.stderr


@pytest.mark.req("SRS-MOD-005")
def test_the_repository_protocol_is_valid_and_pins_the_held_out_set() -> None:
    rules = load_protocol(REPO / "docs" / "change-protocol.yaml")
    assert rules.test_sets[0].seed == 14014 and rules.test_sets[0].truth_sha256
    assert {e.metric for e in rules.endpoints} >= {"sensitivity_at_operating_point", "fpi_at_operating_point", "afroc"}
