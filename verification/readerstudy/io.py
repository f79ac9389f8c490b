"""Read reader-study files: flat CSV, iMRMC, and the JAFROC Excel layout (RJafroc).

The format is recognised from the content (an xlsx file is a zip archive; an iMRMC file has a
``BEGIN DATA:`` line; anything else must be the flat CSV). Every problem raises
:class:`ReaderStudyInputError` with one line naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import io
import lzma
import math
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np

from verification.readerstudy.data import (
    UNMARKED,
    Paradigm,
    ReaderStudy,
    ReaderStudyInputError,
    natural_order,
    roc_study,
)

CSV_COLUMNS = ("reader", "treatment", "case", "truth", "rating")
#: what a damaged xlsx (a zip of XML parts) raises while it is opened or its sheets are read
#: (zipfile: NotImplementedError for a compression method or flag it does not support,
#: RuntimeError for an encrypted member, lzma.LZMAError inside an LZMA member)
DAMAGED_XLSX = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, ElementTree.ParseError, OSError, KeyError,
                ValueError, NotImplementedError, RuntimeError)

RatingKey = tuple[str, str, str]  # (treatment, reader, case)


def read_reader_study(path: Path) -> ReaderStudy:
    """Read a reader study from ``path``, whatever its format."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReaderStudyInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise ReaderStudyInputError(f"{path}: empty file")
    if raw[:4] == b"PK\x03\x04":
        return read_jafroc(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ReaderStudyInputError(
            f"{path}: not a reader-study file (neither text CSV/iMRMC nor an xlsx workbook)") from None
    if any(line.strip().upper() == "BEGIN DATA:" for line in text.splitlines()):
        return read_imrmc(path, text)
    return read_csv(path, text)


# --------------------------------------------------------------------------- helpers


def _number(value: str, what: str, where: str, path: Path) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ReaderStudyInputError(f"{path}: {where}: {what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ReaderStudyInputError(f"{path}: {where}: {what} {value!r} is not finite")
    return number


def _truth_value(value: str, where: str, path: Path) -> int:
    number = _number(value, "truth", where, path)
    if number not in (0.0, 1.0):
        raise ReaderStudyInputError(f"{path}: {where}: truth must be 0 (non-diseased) or 1 (diseased), got {value!r}")
    return int(number)


def _roc_from_records(path: Path, truth: dict[str, int], ratings: dict[RatingKey, float]) -> ReaderStudy:
    """Assemble a fully crossed ROC study; every reader must rate every case in every treatment."""
    treatments = natural_order([t for t, _, _ in ratings])
    readers = natural_order([r for _, r, _ in ratings])
    rated_cases = {c for _, _, c in ratings}
    unrated = sorted(set(truth) - rated_cases)
    if unrated:
        raise ReaderStudyInputError(f"{path}: case {unrated[0]} has truth but no rating")
    normal = natural_order([c for c, t in truth.items() if t == 0])
    abnormal = natural_order([c for c, t in truth.items() if t == 1])
    if not ratings:
        raise ReaderStudyInputError(f"{path}: no ratings")
    table = np.full((len(treatments), len(readers), len(normal) + len(abnormal)), np.nan)
    t_index = {t: i for i, t in enumerate(treatments)}
    r_index = {r: j for j, r in enumerate(readers)}
    c_index = {c: k for k, c in enumerate((*normal, *abnormal))}
    for (t, r, c), value in ratings.items():
        table[t_index[t], r_index[r], c_index[c]] = value
    missing = np.argwhere(np.isnan(table))
    if missing.size:
        i, j, k = missing[0]
        raise ReaderStudyInputError(
            f"{path}: design not fully crossed: reader {readers[j]} has no rating for case "
            f"{(*normal, *abnormal)[k]} in treatment {treatments[i]} ({len(missing)} missing in all)")
    k1 = len(normal)
    return roc_study(treatments, readers, normal, abnormal, table[:, :, :k1], table[:, :, k1:], str(path))


# --------------------------------------------------------------------------- flat CSV


def _csv_rows(path: Path, text: str) -> Iterator[list[str]]:
    """CSV rows, a malformed line (a stray carriage return, an unclosed quote) being one
    ReaderStudyInputError naming the line."""
    reader = csv.reader(io.StringIO(text))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ReaderStudyInputError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
        yield row


def read_csv(path: Path, text: str | None = None) -> ReaderStudy:
    """The flat ROC CSV: a header ``reader,treatment,case,truth,rating`` (any order), one row per rating."""
    text = path.read_text(encoding="utf-8-sig") if text is None else text
    rows = _csv_rows(path, text)
    header = [h.strip().lower() for h in next(rows, [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ReaderStudyInputError(
            f"{path}: not a reader-study CSV: header lacks column(s) {', '.join(missing)} "
            f"(expected {','.join(CSV_COLUMNS)}; or use the iMRMC or JAFROC xlsx format)")
    col = {name: header.index(name) for name in CSV_COLUMNS}
    truth: dict[str, int] = {}
    ratings: dict[RatingKey, float] = {}
    for line_no, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise ReaderStudyInputError(f"{path}: line {line_no}: {len(row)} fields, expected {len(header)}")
        reader, treatment, case = (row[col[c]].strip() for c in ("reader", "treatment", "case"))
        where = f"line {line_no}"
        if not (reader and treatment and case):
            raise ReaderStudyInputError(f"{path}: {where}: empty reader, treatment or case")
        value = _truth_value(row[col["truth"]].strip(), where, path)
        if truth.setdefault(case, value) != value:
            raise ReaderStudyInputError(f"{path}: {where}: case {case} has truth {value} here but {truth[case]} before")
        key = (treatment, reader, case)
        if key in ratings:
            raise ReaderStudyInputError(
                f"{path}: {where}: second rating of case {case} by reader {reader} in treatment {treatment}")
        ratings[key] = _number(row[col["rating"]].strip(), "rating", where, path)
    return _roc_from_records(path, truth, ratings)


# --------------------------------------------------------------------------- iMRMC


def read_imrmc(path: Path, text: str | None = None) -> ReaderStudy:
    """The iMRMC input format: a description, ``N0/N1/NR/NM`` counts, ``BEGIN DATA:``, then
    ``readerID,caseID,modalityID,score`` lines; truth lines have reader ``-1`` and the truth (0/1) as score."""
    text = path.read_text(encoding="utf-8-sig") if text is None else text
    lines = text.splitlines()
    begin = next(n for n, line in enumerate(lines) if line.strip().upper() == "BEGIN DATA:")
    declared: dict[str, int] = {}
    for line in lines[:begin]:
        key, sep, value = line.partition(":")
        if sep and key.strip().upper() in ("N0", "N1", "NR", "NM"):
            try:
                declared[key.strip().upper()] = int(value.strip())
            except ValueError:
                raise ReaderStudyInputError(f"{path}: header {key.strip()}: {value.strip()!r} is not an integer") from None
    truth: dict[str, int] = {}
    ratings: dict[RatingKey, float] = {}
    for line_no, line in enumerate(lines[begin + 1:], start=begin + 2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        where = f"line {line_no}"
        if len(fields) != 4:
            raise ReaderStudyInputError(
                f"{path}: {where}: {len(fields)} fields, expected readerID,caseID,modalityID,score")
        reader, case, modality, score = fields
        if not (reader and case and modality):
            raise ReaderStudyInputError(f"{path}: {where}: empty reader, case or modality")
        if reader == "-1":
            value = _truth_value(score, where, path)
            if truth.setdefault(case, value) != value:
                raise ReaderStudyInputError(f"{path}: {where}: case {case} has two different truth states")
            continue
        key = (modality, reader, case)
        if key in ratings:
            raise ReaderStudyInputError(
                f"{path}: {where}: second score of case {case} by reader {reader} in modality {modality}")
        ratings[key] = _number(score, "score", where, path)
    untruthed = sorted({c for _, _, c in ratings} - set(truth))
    if untruthed:
        raise ReaderStudyInputError(f"{path}: case {untruthed[0]} has scores but no truth line (reader -1)")
    study = _roc_from_records(path, truth, ratings)
    actual = {"N0": study.n_normal, "N1": study.n_abnormal, "NR": study.n_readers, "NM": study.n_treatments}
    for key, value in declared.items():
        if actual[key] != value:
            raise ReaderStudyInputError(f"{path}: header says {key}:{value} but the data have {actual[key]}")
    return study


# --------------------------------------------------------------------------- JAFROC xlsx


def _id(value: Any) -> str:
    """A cell as an identifier: integral numbers without a decimal point, text trimmed."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _sheet_rows(path: Path, sheet: Any, columns: dict[str, Sequence[str]]) -> list[tuple[int, dict[str, Any]]]:
    """Rows of a worksheet as dicts keyed by the wanted columns (matched by header, case-insensitive).

    ``columns`` maps a key to the accepted header names; keys whose names are all absent are
    omitted when optional (prefixed ``?``), otherwise an error.
    """
    rows = sheet.iter_rows(values_only=True)
    header = [str(h).strip().lower() if h is not None else "" for h in next(rows, ())]
    index: dict[str, int] = {}
    for key, names in columns.items():
        optional = key.startswith("?")
        found = [header.index(n.lower()) for n in names if n.lower() in header]
        if found:
            index[key.lstrip("?")] = found[0]
        elif not optional:
            raise ReaderStudyInputError(
                f"{path}: sheet {sheet.title}: no column {' or '.join(names)} in the header row")
    out: list[tuple[int, dict[str, Any]]] = []
    for row_no, row in enumerate(rows, start=2):
        cells = {key: (row[i] if i < len(row) else None) for key, i in index.items()}
        cells = {k: (None if isinstance(v, str) and not v.strip() else v) for k, v in cells.items()}
        if all(v is None for v in cells.values()):
            continue
        out.append((row_no, cells))
    return out


def _cell_number(path: Path, sheet: str, row_no: int, key: str, value: Any, integer: bool = False) -> float:
    where = f"sheet {sheet} row {row_no}"
    if value is None:
        raise ReaderStudyInputError(f"{path}: {where}: empty {key}")
    number = _number(value, key, where, path)
    if integer and not number.is_integer():
        raise ReaderStudyInputError(f"{path}: {where}: {key} {value!r} is not an integer")
    return number


def _split_ids(value: Any) -> list[str]:
    return [p for p in str(_id(value)).replace(",", " ").split() if p] if value is not None else []


def read_jafroc(path: Path) -> ReaderStudy:
    """The JAFROC workbook (sheets Truth, TP, FP) as written for RJafroc, ROC or FROC.

    Truth rows are ``CaseID, LesionID, Weight`` (LesionID 0 marks a non-diseased case) and,
    in the newer layout, ``ReaderID, ModalityID, Paradigm``. TP rows are ``ReaderID,
    ModalityID, CaseID, LesionID, TP_Rating``; FP rows ``ReaderID, ModalityID, CaseID,
    FP_Rating``. Lesion weights all 0 for a case mean equal weights; otherwise they must sum
    to 1 (within 0.01, then renormalised), as in RJafroc. The paradigm is the declared one or,
    without a Paradigm column, ROC when every case has one truth row and exactly one rating per
    reader and treatment (non-diseased in FP, diseased in TP), else FROC.
    """
    import warnings

    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl warns about Excel extensions it does not keep
        try:  # from bytes: openpyxl would otherwise insist on an .xlsx file name
            workbook = openpyxl.load_workbook(io.BytesIO(path.read_bytes()), read_only=True, data_only=True)
        except (*DAMAGED_XLSX, InvalidFileException) as exc:
            raise ReaderStudyInputError(f"{path}: not a readable xlsx workbook: {str(exc)[:200]}") from None
        try:  # read-only workbooks parse their sheets lazily: damage inside one shows up here
            return _read_workbook(path, workbook)
        except ReaderStudyInputError:
            raise
        except (*DAMAGED_XLSX, TypeError, IndexError) as exc:
            raise ReaderStudyInputError(f"{path}: damaged xlsx workbook ({type(exc).__name__})") from None


def _read_workbook(path: Path, workbook: Any) -> ReaderStudy:
    try:
        sheets = {ws.title.strip().upper(): ws for ws in workbook.worksheets}

        def sheet(*names: str) -> Any:
            for name in names:
                if name in sheets:
                    return sheets[name]
            raise ReaderStudyInputError(
                f"{path}: no {' or '.join(names)} worksheet (a JAFROC workbook has sheets Truth, TP, FP)")

        truth_sheet, tp_sheet, fp_sheet = sheet("TRUTH"), sheet("TP", "LL"), sheet("FP", "NL")
        truth_rows = _sheet_rows(path, truth_sheet, {
            "CaseID": ["CaseID"], "LesionID": ["LesionID"], "Weight": ["Weight"],
            "?ReaderID": ["ReaderID"], "?ModalityID": ["ModalityID"], "?Paradigm": ["Paradigm"]})
        tp_rows = _sheet_rows(path, tp_sheet, {
            "ReaderID": ["ReaderID"], "ModalityID": ["ModalityID"], "CaseID": ["CaseID"],
            "LesionID": ["LesionID"], "Rating": ["TP_Rating", "LL_Rating"]})
        fp_rows = _sheet_rows(path, fp_sheet, {
            "ReaderID": ["ReaderID"], "ModalityID": ["ModalityID"], "CaseID": ["CaseID"],
            "Rating": ["FP_Rating", "NL_Rating"]})
    finally:
        workbook.close()
    return _jafroc_study(path, truth_sheet.title, truth_rows, tp_sheet.title, tp_rows, fp_sheet.title, fp_rows)


def _declared_paradigm(path: Path, truth_rows: Iterable[tuple[int, dict[str, Any]]]) -> Paradigm | None:
    values = [str(c["Paradigm"]).strip().upper() for _, c in truth_rows if c.get("Paradigm") is not None]
    if not values:
        return None
    if values[0] not in ("ROC", "FROC"):
        raise ReaderStudyInputError(f"{path}: Truth Paradigm {values[0]!r} not supported (ROC or FROC)")
    if len(values) > 1 and values[1] not in ("FCTRL", "CROSSED"):
        raise ReaderStudyInputError(
            f"{path}: study design {values[1]!r} not supported (only fully crossed, FCTRL)")
    return Paradigm(values[0])


def _jafroc_study(
    path: Path,
    truth_name: str, truth_rows: list[tuple[int, dict[str, Any]]],
    tp_name: str, tp_rows: list[tuple[int, dict[str, Any]]],
    fp_name: str, fp_rows: list[tuple[int, dict[str, Any]]],
) -> ReaderStudy:
    if not truth_rows:
        raise ReaderStudyInputError(f"{path}: sheet {truth_name} has no cases")
    lesions: dict[str, dict[int, float]] = defaultdict(dict)  # case -> lesion ID -> weight
    normal_set: set[str] = set()
    truth_rows_per_case: dict[str, int] = defaultdict(int)
    declared_readers: set[str] = set()
    declared_treatments: set[str] = set()
    for row_no, c in truth_rows:
        case = _id(_cell_number(path, truth_name, row_no, "CaseID", c["CaseID"], integer=True))
        lesion = int(_cell_number(path, truth_name, row_no, "LesionID", c["LesionID"], integer=True))
        weight = _cell_number(path, truth_name, row_no, "Weight", c["Weight"])
        truth_rows_per_case[case] += 1
        declared_readers.update(_split_ids(c.get("ReaderID")))
        declared_treatments.update(_split_ids(c.get("ModalityID")))
        if lesion < 0:
            raise ReaderStudyInputError(f"{path}: sheet {truth_name} row {row_no}: LesionID {lesion} is negative")
        if lesion == 0:
            normal_set.add(case)
        elif lesion in lesions[case]:
            raise ReaderStudyInputError(f"{path}: sheet {truth_name} row {row_no}: case {case} lesion {lesion} listed twice")
        else:
            lesions[case][lesion] = weight
        if case in normal_set and lesions.get(case):
            raise ReaderStudyInputError(
                f"{path}: sheet {truth_name} row {row_no}: case {case} is listed as non-diseased (LesionID 0) and with lesions")
        if truth_rows_per_case[case] > 1 and case in normal_set:
            raise ReaderStudyInputError(f"{path}: sheet {truth_name} row {row_no}: non-diseased case {case} listed twice")
    normal = natural_order(normal_set)
    abnormal = natural_order([c for c, les in lesions.items() if les])
    if not abnormal or not normal:
        raise ReaderStudyInputError(f"{path}: sheet {truth_name} needs both non-diseased (LesionID 0) and diseased cases")

    # lesion IDs (sorted) and weights per abnormal case, RJafroc's weight rules
    max_lesions = max(len(lesions[c]) for c in abnormal)
    lesion_ids: list[list[int]] = []
    weights = np.zeros((len(abnormal), max_lesions))
    for k2, case in enumerate(abnormal):
        ids = sorted(lesions[case])
        lesion_ids.append(ids)
        w = np.array([lesions[case][lid] for lid in ids], dtype=float)
        if np.all(w == 0):
            w = np.full(len(ids), 1.0 / len(ids))
        elif w.sum() != 1.0:
            if not 0.99 <= w.sum() <= 1.01 or np.any(w < 0):
                raise ReaderStudyInputError(
                    f"{path}: sheet {truth_name}: lesion weights of case {case} sum to {w.sum():g}, not 1")
            w = w / w.sum()
        weights[k2, :len(ids)] = w

    # ratings
    fps: dict[RatingKey, list[float]] = defaultdict(list)
    for row_no, c in fp_rows:
        if c["ReaderID"] is None or c["ModalityID"] is None:
            raise ReaderStudyInputError(f"{path}: sheet {fp_name} row {row_no}: empty ReaderID or ModalityID")
        reader, treatment = _id(c["ReaderID"]), _id(c["ModalityID"])
        case = _id(_cell_number(path, fp_name, row_no, "CaseID", c["CaseID"], integer=True))
        if case not in truth_rows_per_case:
            raise ReaderStudyInputError(f"{path}: sheet {fp_name} row {row_no}: case {case} is not in the Truth sheet")
        fps[(treatment, reader, case)].append(_cell_number(path, fp_name, row_no, "FP_Rating", c["Rating"]))
    tps: dict[tuple[str, str, str, int], float] = {}
    for row_no, c in tp_rows:
        if c["ReaderID"] is None or c["ModalityID"] is None:
            raise ReaderStudyInputError(f"{path}: sheet {tp_name} row {row_no}: empty ReaderID or ModalityID")
        reader, treatment = _id(c["ReaderID"]), _id(c["ModalityID"])
        case = _id(_cell_number(path, tp_name, row_no, "CaseID", c["CaseID"], integer=True))
        lesion = int(_cell_number(path, tp_name, row_no, "LesionID", c["LesionID"], integer=True))
        if case in normal_set:
            raise ReaderStudyInputError(
                f"{path}: sheet {tp_name} row {row_no}: case {case} is non-diseased (LesionID 0 in Truth)")
        if lesion not in lesions.get(case, {}):
            raise ReaderStudyInputError(
                f"{path}: sheet {tp_name} row {row_no}: case {case} lesion {lesion} is not in the Truth sheet")
        key = (treatment, reader, case, lesion)
        if key in tps:
            raise ReaderStudyInputError(
                f"{path}: sheet {tp_name} row {row_no}: second rating of case {case} lesion {lesion} "
                f"by reader {reader} in modality {treatment}")
        tps[key] = _cell_number(path, tp_name, row_no, "TP_Rating", c["Rating"])

    treatments = natural_order({t for t, _, _ in fps} | {k[0] for k in tps} | declared_treatments)
    readers = natural_order({r for _, r, _ in fps} | {k[1] for k in tps} | declared_readers)
    if not treatments or not readers:
        raise ReaderStudyInputError(f"{path}: no ratings in sheets {tp_name} and {fp_name}")
    cases = (*normal, *abnormal)
    t_index = {t: i for i, t in enumerate(treatments)}
    r_index = {r: j for j, r in enumerate(readers)}
    c_index = {c: k for k, c in enumerate(cases)}
    max_nl = max((len(v) for v in fps.values()), default=1)
    nl = np.full((len(treatments), len(readers), len(cases), max_nl), UNMARKED)
    for (t, r, case), values in fps.items():
        nl[t_index[t], r_index[r], c_index[case], :len(values)] = sorted(values, reverse=True)
    ll = np.full((len(treatments), len(readers), len(abnormal), max_lesions), UNMARKED)
    a_index = {c: k for k, c in enumerate(abnormal)}
    for (t, r, case, lesion), value in tps.items():
        ll[t_index[t], r_index[r], a_index[case], lesion_ids[a_index[case]].index(lesion)] = value

    k1 = len(normal)
    one_row_per_case = max(truth_rows_per_case.values()) == 1
    roc_shaped = (one_row_per_case and max_nl == 1 and np.all(np.isneginf(nl[:, :, k1:]))
                  and not np.any(np.isneginf(nl[:, :, :k1, 0])) and not np.any(np.isneginf(ll[..., 0])))
    paradigm = _declared_paradigm(path, truth_rows)
    if paradigm is None:
        paradigm = Paradigm.ROC if roc_shaped else Paradigm.FROC
    if paradigm is Paradigm.ROC:
        if not one_row_per_case:
            raise ReaderStudyInputError(f"{path}: ROC data, but a case has more than one Truth row")
        if max_nl > 1 or np.any(np.isfinite(nl[:, :, k1:])):
            raise ReaderStudyInputError(
                f"{path}: ROC data, but sheet {fp_name} rates a case twice or rates a diseased case")
        unrated = np.argwhere(np.isneginf(np.concatenate([nl[:, :, :k1, 0], ll[..., 0]], axis=2)))
        if unrated.size:
            i, j, k = unrated[0]
            raise ReaderStudyInputError(
                f"{path}: ROC data not fully crossed: reader {readers[j]} has no rating for case {cases[k]} "
                f"in modality {treatments[i]} ({len(unrated)} missing in all)")
        return roc_study(treatments, readers, normal, abnormal, nl[:, :, :k1, 0], ll[..., 0], str(path))
    return ReaderStudy(
        paradigm=Paradigm.FROC,
        treatments=treatments,
        readers=readers,
        normal_cases=normal,
        abnormal_cases=abnormal,
        nl=nl,
        ll=ll,
        lesion_weights=weights,
        lesions_per_case=np.array([len(ids) for ids in lesion_ids], dtype=int),
        source=str(path),
    )
