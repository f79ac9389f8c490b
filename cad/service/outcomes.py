"""Radiologists' outcomes and the CAD's performance against them (post-market monitoring).

A site exports, per screening study, the final outcome from its RIS or screening registry as a
CSV file (docs/service.md, Outcomes): ``StudyInstanceUID``, ``assessment`` (BI-RADS 0-6),
``recall`` (yes/no) and, when known, ``pathology`` (malignant, benign, none), ``laterality``
(R, L, B) and ``location`` (a quadrant). Only these columns are read and stored: UIDs and coded
values, nothing that names a patient. A bad row is refused with one line naming the file, the
line and the problem; the good rows are kept. Importing a study again replaces its outcome.

Performance over a rolling window (outcomes of studies analysed in the last ``window_days``),
matched to the study's latest analysis (``study_facts``): exam-level sensitivity (a CAD mark on
the study, and, where laterality is known, on the cancer's side) among cancers (pathology
malignant), specificity (no CAD mark) among non-cancers (pathology benign or none, or not
recalled), the CAD-positive rate among recalled and non-recalled studies, each with an exact
(Clopper-Pearson) 95 % interval from scipy.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import binomtest

from cad.errors import UsageError
from cad.io.uids import is_valid_uid
from cad.service import audit

COLUMNS = ("StudyInstanceUID", "assessment", "recall", "pathology", "laterality", "location")
REQUIRED = ("StudyInstanceUID", "assessment", "recall")
PATHOLOGY = ("malignant", "benign", "none", "")
LATERALITY = ("R", "L", "B", "")
LOCATIONS = ("UOQ", "UIQ", "LOQ", "LIQ", "central", "subareolar", "axillary", "")
YES, NO = ("yes", "y", "1", "true"), ("no", "n", "0", "false")
#: at most this many bytes are read from an outcomes file (about a million rows)
MAX_BYTES = 64 << 20


class OutcomesError(UsageError):
    """The outcomes file cannot be read at all (one line naming the file and the problem)."""


@dataclass(frozen=True)
class Outcome:
    study_uid: str
    assessment: int
    recall: bool
    pathology: str
    laterality: str
    location: str

    @property
    def cancer(self) -> bool | None:
        """True for a malignancy, False for a negative outcome, None while undetermined (recalled
        without a pathology result)."""
        if self.pathology == "malignant":
            return True
        if self.pathology in ("benign", "none") or not self.recall:
            return False
        return None


@dataclass(frozen=True)
class ImportReport:
    imported: int
    refused: tuple[str, ...]
    ignored_columns: tuple[str, ...]


def read_text(path: Path) -> str:
    """An outcomes file's text (UTF-8, a BOM dropped); OutcomesError naming the file otherwise."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise OutcomesError(f"{path}: larger than {MAX_BYTES >> 20} MiB; split it")
        # bytes decoded as the API decodes a request body: line ends reach the csv module as sent
        return path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise OutcomesError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise OutcomesError(f"{path}: not UTF-8 text") from None


def parse(path: Path, text: str | None = None) -> tuple[list[Outcome], list[str], list[str]]:
    """Outcomes of a CSV file (or of ``text``, named ``path``): (good rows, one line per refused
    row, columns not read). OutcomesError when the file cannot be read or lacks a required column."""
    if text is None:
        text = read_text(path)
    # newline="": the csv module reads line ends itself (a lone CR ends a row, as in old Mac files)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [(reader.line_num, row) for row in reader]  # the line a row ends on
    except csv.Error as exc:  # e.g. a field beyond the csv module's size limit
        raise OutcomesError(f"{path} line {reader.line_num}: not a readable CSV file ({exc})") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise OutcomesError(f"{path}: no column {', '.join(missing)} (the header must name {', '.join(REQUIRED)})")
    ignored = [h for h in header if h not in COLUMNS]
    good: list[Outcome] = []
    refused: list[str] = []
    for line, raw in rows:
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        problem, outcome = _row(row)
        if problem:
            refused.append(f"{path} line {line}: {problem}; row not imported")
        elif outcome is not None:
            good.append(outcome)
    return good, refused, ignored


def _row(row: dict[str, str]) -> tuple[str | None, Outcome | None]:
    uid = row.get("StudyInstanceUID", "")
    if not is_valid_uid(uid):
        return "StudyInstanceUID is not a valid DICOM UID", None
    assessment = row.get("assessment", "")
    if assessment not in {str(k) for k in range(7)}:
        return f"assessment {assessment[:20]!r} is not a BI-RADS category 0-6", None
    recall = row.get("recall", "").lower()
    if recall not in YES + NO:
        return f"recall {recall[:20]!r} is not yes or no", None
    pathology = row.get("pathology", "").lower()
    if pathology not in PATHOLOGY:
        return f"pathology {pathology[:20]!r} is not one of malignant, benign, none (or empty)", None
    laterality = row.get("laterality", "").upper()
    if laterality not in LATERALITY:
        return f"laterality {laterality[:20]!r} is not R, L or B (or empty)", None
    location = row.get("location", "")
    if location not in LOCATIONS:
        return f"location {location[:20]!r} is not one of {', '.join(x for x in LOCATIONS if x)} (or empty)", None
    if pathology == "malignant" and recall in NO:
        return "a malignant pathology without a recall is not a screening outcome this format covers", None
    return None, Outcome(uid, int(assessment), recall in YES, pathology, laterality, location)


def import_file(connection: sqlite3.Connection, path: Path, text: str | None = None) -> ImportReport:
    """Parse and store an outcomes file (or ``text``) in one transaction; what was kept, refused and ignored."""
    text = read_text(path) if text is None else text
    good, refused, ignored = parse(path, text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    now = time.time()
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.executemany(
            "INSERT OR REPLACE INTO outcomes (study_uid, assessment, recall, pathology, laterality, location, imported, "
            "source_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(o.study_uid, o.assessment, int(o.recall), o.pathology, o.laterality, o.location, now, digest) for o in good])
        audit.append(connection, {"event": "outcomes_imported", "file_sha256": digest, "rows": len(good),
                                  "refused": len(refused)})
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return ImportReport(len(good), tuple(refused), tuple(ignored))


def _proportion(successes: int, trials: int) -> dict[str, Any]:
    if trials == 0:
        return {"estimate": None, "ci95": None, "n": 0}
    interval = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="exact")
    return {"estimate": round(successes / trials, 4), "ci95": [round(interval.low, 4), round(interval.high, 4)],
            "n": trials, "positive": successes}


def performance(connection: sqlite3.Connection, window_days: float = 365.0, now: float | None = None) -> dict[str, Any]:
    """The CAD's exam-level performance against the outcomes of studies analysed in the window."""
    now = time.time() if now is None else now
    since = now - window_days * 86400
    rows = connection.execute(
        "SELECT o.*, f.facts, f.sides FROM outcomes o JOIN study_facts f ON f.study_uid = o.study_uid "
        "WHERE f.finished >= ? AND f.job_id = (SELECT MAX(job_id) FROM study_facts g WHERE g.study_uid = o.study_uid)",
        (since,)).fetchall()
    cancers = side_hits = hits = negatives = true_negatives = 0
    recalled = recalled_positive = not_recalled = not_recalled_positive = undetermined = 0
    for row in rows:
        outcome = Outcome(row["study_uid"], row["assessment"], bool(row["recall"]), row["pathology"],
                          row["laterality"], row["location"])
        marks = json.loads(row["facts"])["marks"]
        sides = json.loads(row["sides"] or "{}")
        positive = marks > 0
        if outcome.recall:
            recalled += 1
            recalled_positive += positive
        else:
            not_recalled += 1
            not_recalled_positive += positive
        cancer = outcome.cancer
        if cancer is None:
            undetermined += 1
        elif cancer:
            cancers += 1
            hits += positive
            wanted = ("R", "L") if outcome.laterality in ("B", "") else (outcome.laterality,)
            side_hits += any(sides.get(side, 0) > 0 for side in wanted)
        else:
            negatives += 1
            true_negatives += not positive
    unmatched = connection.execute("SELECT COUNT(*) FROM outcomes o WHERE NOT EXISTS "
                                   "(SELECT 1 FROM study_facts f WHERE f.study_uid = o.study_uid)").fetchone()[0]
    return {
        "window_days": window_days, "matched_studies": len(rows), "outcomes_without_cad_result": int(unmatched),
        "cancers": cancers, "undetermined": undetermined,
        "sensitivity": _proportion(hits, cancers),
        "sensitivity_on_the_cancer_side": _proportion(side_hits, cancers),
        "specificity": _proportion(true_negatives, negatives),
        "cad_positive_rate_recalled": _proportion(recalled_positive, recalled),
        "cad_positive_rate_not_recalled": _proportion(not_recalled_positive, not_recalled),
    }
