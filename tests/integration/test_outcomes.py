"""Radiologists' outcomes: import, refusal of bad rows, performance with exact CIs, floor alert (SRS-SVC-015)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scipy.stats import binomtest

from cad.service import alerts, audit, drift, outcomes, store
from cad.service.alerts import AlertMonitor
from cad.service.queue import JobQueue
from cad.service.settings import AlertSettings, MonitoringSettings, PerformanceSettings

HEADER = "StudyInstanceUID,assessment,recall,pathology,laterality,location,PatientName\n"


def _study(connection: sqlite3.Connection, n: int, marks: dict[str, int], finished: float) -> str:
    uid = f"1.2.826.0.1.3680043.2.1125.9.{n}"
    connection.execute("INSERT INTO jobs (id, study_uid, instances_sha256, instances, source, state, next_attempt, "
                       "enqueued) VALUES (?, ?, ?, '[]', 'test', 'done', 0, 0)", (n, uid, str(n)))
    total = sum(marks.values())
    drift.record(connection, n, uid, finished, drift.OutputFacts(float(total), float(total > 0), 0.5, 0.0, 0.0, 1.0),
                 marks)
    return uid


@pytest.mark.req("SRS-SVC-015")
def test_bad_rows_are_refused_one_line_each_and_only_coded_values_are_stored(tmp_path: Path) -> None:
    good = "1.2.826.0.1.3680043.2.1125.9.1"
    text = HEADER + "\n".join([
        f"{good},4,yes,malignant,R,UOQ,DOE^JANE",
        "not-a-uid,1,no,,,,X",
        f"{good}.2,7,no,,,,X",
        f"{good}.3,1,maybe,,,,X",
        f"{good}.4,2,no,cancer,,,X",
        f"{good}.5,2,no,,R,,X",
        f"{good}.6,0,yes,,,,",
        f"{good}.7,1,no,malignant,,,",
    ]) + "\n"
    path = tmp_path / "outcomes.csv"
    path.write_text("\ufeff" + text)  # a BOM, as spreadsheet exports write it
    connection = store.connect(tmp_path / "state")
    report = outcomes.import_file(connection, path)
    assert report.imported == 3 and report.ignored_columns == ("PatientName",)
    assert list(report.refused) == [
        f"{path} line 3: StudyInstanceUID is not a valid DICOM UID; row not imported",
        f"{path} line 4: assessment '7' is not a BI-RADS category 0-6; row not imported",
        f"{path} line 5: recall 'maybe' is not yes or no; row not imported",
        f"{path} line 6: pathology 'cancer' is not one of malignant, benign, none (or empty); row not imported",
        f"{path} line 9: a malignant pathology without a recall is not a screening outcome this format covers; "
        "row not imported",
    ]
    stored = [dict(r) for r in connection.execute("SELECT * FROM outcomes ORDER BY study_uid")]
    assert [r["study_uid"] for r in stored] == [good, f"{good}.5", f"{good}.6"]
    assert "DOE" not in json.dumps(stored), "a column outside the format is never stored"
    assert audit.records(connection)[-1]["event"] == "outcomes_imported" and audit.verify(connection).intact
    with pytest.raises(outcomes.OutcomesError, match="no column recall"):
        outcomes.parse(path, "StudyInstanceUID,assessment\n1.2.3,1\n")


@pytest.mark.req("SRS-SVC-015")
def test_performance_against_outcomes_with_exact_intervals_and_a_floor_alert(tmp_path: Path) -> None:
    connection = store.connect(tmp_path / "state")
    now = time.time()
    rows = [HEADER.strip()]
    n = 0
    for k in range(20):  # 20 cancers in the right breast: 16 marked, 14 of them on the right
        n += 1
        marks = {"R": 1} if k < 14 else ({"L": 1} if k < 16 else {})
        rows.append(f"{_study(connection, n, marks, now - 3600)},5,yes,malignant,R,,")
    for k in range(60):  # 60 studies without cancer: 15 marked; 10 of them recalled (benign)
        n += 1
        marks = {"L": 2} if k < 15 else {}
        recall, pathology = ("yes", "benign") if k >= 50 else ("no", "")
        rows.append(f"{_study(connection, n, marks, now - 3600)},{3 if recall == 'yes' else 1},{recall},{pathology},,,")
    n += 1
    rows.append(f"{_study(connection, n, {'R': 1}, now - 3600)},0,yes,,,,")  # recalled, pathology pending
    n += 1
    rows.append(f"{_study(connection, n, {}, now - 400 * 86400)},5,yes,malignant,L,,")  # outside the window
    rows.append("1.2.826.0.1.3680043.2.1125.9.999,1,no,,,,")  # no CAD result for it
    path = tmp_path / "outcomes.csv"
    path.write_text("\n".join(rows) + "\n")
    assert outcomes.import_file(connection, path).imported == 83
    found = outcomes.performance(connection, window_days=365, now=now)
    assert found["matched_studies"] == 81 and found["outcomes_without_cad_result"] == 1
    assert found["cancers"] == 20 and found["undetermined"] == 1
    expected = binomtest(16, 20).proportion_ci(method="exact")
    assert found["sensitivity"]["estimate"] == 0.8
    assert found["sensitivity"]["ci95"] == [round(expected.low, 4), round(expected.high, 4)]
    assert found["sensitivity_on_the_cancer_side"]["estimate"] == 0.7
    assert found["specificity"] == {**found["specificity"], "estimate": 0.75, "n": 60}
    assert found["cad_positive_rate_recalled"]["n"] == 31 and found["cad_positive_rate_recalled"]["positive"] == 17
    assert found["cad_positive_rate_not_recalled"]["n"] == 50 and found["cad_positive_rate_not_recalled"]["positive"] == 15
    queue = JobQueue(connection)
    def monitor(min_cancers: int) -> AlertMonitor:
        return AlertMonitor(MonitoringSettings(alerts=AlertSettings(600, audit_every_seconds=3600),
                                               performance=PerformanceSettings(0.85, min_cancers=min_cancers)))

    (alert,) = monitor(20).check(queue, {}, {}, now)
    assert alert.key == "performance:sensitivity" and "0.800" in alert.message and "below the floor 0.85" in alert.message
    assert monitor(21).check(queue, {}, {}, now) == []
    assert {a.key: a.state for a in alerts.alerts(connection)}["performance:sensitivity"] == "resolved"


@pytest.mark.req("SRS-SVC-015")
def test_the_outcomes_command(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text(HEADER + "1.2.826.0.1.3680043.2.1125.9.1,1,no,,,,X\n1.2.3,9,no,,,,X\n")
    cad = [sys.executable, "-m", "cad.cli", "outcomes"]
    result = subprocess.run([*cad, "import", str(path), "--state", str(tmp_path / "state")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "imported 1 outcome(s); refused 1" in result.stdout
    assert f"refused: {path} line 3: assessment '9' is not a BI-RADS category 0-6" in result.stderr
    assert "columns not read (not part of the format): PatientName" in result.stderr and "Traceback" not in result.stderr
    report = subprocess.run([*cad, "report", "--state", str(tmp_path / "state")], capture_output=True, text=True,
                            timeout=120)
    assert report.returncode == 0 and json.loads(report.stdout)["outcomes_without_cad_result"] == 1
    missing = subprocess.run([*cad, "import", str(tmp_path / "none.csv"), "--state", str(tmp_path / "state")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2
