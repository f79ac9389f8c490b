"""SOURCE_DATE_EPOCH fixes the one creation instant of a study's DICOM objects, so two runs over
the same exam write the same bytes; without it the objects carry the time of writing
(SRS-DCM-007)."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

CAD = [sys.executable, "-m", "cad.cli"]
EPOCH = 1780000000  # 2026-05-28 20:26:40 UTC
#: every creation date, time and date-time attribute an SR or presentation state carries
CREATION = ("InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
            "PresentationCreationDate", "PresentationCreationTime")


def _detect(exam: Path, out: Path, epoch: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = epoch
    return subprocess.run([*CAD, "detect", str(exam), "--out", str(out)], capture_output=True, text=True,
                          timeout=600, env=env)


def _creation_values(path: Path) -> set[str]:
    dataset = pydicom.dcmread(path)
    values = {f"{k}={dataset.get(k)}" for k in CREATION if k in dataset}
    values |= {f"ContributionDateTime={item.ContributionDateTime}"
               for item in dataset.get("ContributingEquipmentSequence", []) if "ContributionDateTime" in item}
    return values


@pytest.mark.req("SRS-DCM-007")
def test_one_epoch_gives_the_same_bytes_and_no_epoch_the_time_of_writing(exam_files: list[Path],
                                                                        tmp_path: Path) -> None:
    exam = exam_files[0].parent
    first, second, now = tmp_path / "first", tmp_path / "second", tmp_path / "now"
    for out, epoch in ((first, str(EPOCH)), (second, str(EPOCH)), (now, None)):
        ran = _detect(exam, out, epoch)
        assert ran.returncode == 0, ran.stderr

    (study,) = [p for p in first.iterdir() if p.is_dir()]
    written = sorted(p.relative_to(first) for p in study.rglob("*") if p.is_file())
    names = {p.name for p in written}
    assert {"findings.json", "cad-sr.dcm"} <= names and any(n.startswith("cad-pr") for n in names), names
    assert any(p.suffix == ".png" for p in written), "overlays are compared too"
    for path in written:
        assert (second / path).read_bytes() == (first / path).read_bytes(), path

    instant = datetime.datetime.fromtimestamp(EPOCH, tz=datetime.UTC)
    date, time = instant.strftime("%Y%m%d"), instant.strftime("%H%M%S")
    for path in [study / "cad-sr.dcm", *study.glob("cad-pr*.dcm")]:
        values = _creation_values(path)
        assert len(values) >= 5, values  # instance, content or presentation, equipment
        for value in values:
            assert value.split("=")[1] in (date, time, date + time), value
    # without the variable: the time of writing (local time, as highdicom writes it)
    today = {datetime.date.today().strftime("%Y%m%d"),
             (datetime.date.today() - datetime.timedelta(days=1)).strftime("%Y%m%d")}
    sr_now = pydicom.dcmread(next(now.glob("*/cad-sr.dcm")))
    assert sr_now.InstanceCreationDate in today and sr_now.ContentDate == sr_now.InstanceCreationDate


@pytest.mark.req("SRS-DCM-007")
def test_a_malformed_epoch_stops_with_one_line(exam_files: list[Path], tmp_path: Path) -> None:
    ran = _detect(exam_files[0].parent, tmp_path / "out", "next tuesday")
    assert ran.returncode == 2
    assert "SOURCE_DATE_EPOCH" in ran.stderr and "Traceback" not in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
