"""Agreement with RJafroc 2.1.3 on the Van Dyke ROC study and RJafroc's FROC example (SRS-MRMC-006).

reference_results.json holds RJafroc's output tables (rows/cols/values as RJafroc labels them:
treatments "trt<ID>", readers "rdr<ID>", differences "trt<a>-trt<b>"). Every value in it is
compared with ours to a relative 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from verification.readerstudy import FigureOfMerit, Method, analyse, read_reader_study

DATA = Path(__file__).parents[1] / "data" / "reader-study"
REFERENCE = json.loads((DATA / "reference_results.json").read_text())
RTOL = 1e-6

DATASETS = {"vandyke_roc": ("vandyke_roc.imrmc", FigureOfMerit.WILCOXON),
            "froc_example": ("froc_example.xlsx", FigureOfMerit.WAFROC)}


def _ours(name: str) -> dict[str, Any]:
    file, fom = DATASETS[name]
    return analyse(read_reader_study(DATA / file), fom, (Method.OR, Method.DBM)).to_json()


def _test_values(test: dict[str, Any], columns: list[str], row: str) -> list[float | None]:
    """Our test quantities in the order of one row of RJafroc's FTests table."""
    stat = test["chisq"] if "chisq" in test else test["f"]
    treatment = {"DF": test.get("df_num", test.get("df")), "MS": test["ms_treatment"], "FStat": stat, "F": stat,
                 "Chisq": stat, "p": test["p"]}
    error = {"DF": test.get("df_den"), "MS": test["ms_error"]}
    source = treatment if row in ("Treatment", "T") else error
    return [source.get(c) for c in columns]


def _difference_values(diff: dict[str, Any], columns: list[str]) -> list[float | None]:
    names = {"Estimate": "estimate", "StdErr": "stderr", "DF": "df", "t": "statistic", "z": "statistic",
             "PrGTt": "p", "PrGTz": "p", "CILower": "ci_lower", "CIUpper": "ci_upper"}
    return [diff[names[c]] for c in columns]


def compare(name: str) -> dict[str, float]:
    """Largest relative difference per reference table; asserts every value is present."""
    ref, ours = REFERENCE[name], _ours(name)
    errors: dict[str, float] = {}

    def check(key: str, theirs: list[Any], mine: list[Any]) -> None:
        pairs = [(t, m) for t, m in zip(theirs, mine, strict=True) if t is not None]
        assert all(m is not None for _, m in pairs), f"{name} {key}: missing values {mine}"
        t, m = np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs], float)
        errors[key] = max(errors.get(key, 0.0), float(np.max(np.abs(m / t - 1))))

    assert ref["fom"].lower() == ours["fom"]
    table = ref["foms"]
    assert [r.removeprefix("trt") for r in table["rows"]] == ours["treatments"]
    assert [c.removeprefix("rdr") for c in table["cols"]] == ours["readers"]
    for row, values in zip(table["rows"], table["values"], strict=True):
        check("foms", values, [ours["foms"][row.removeprefix("trt")][c.removeprefix("rdr")] for c in table["cols"]])
    for key, block in ref.items():
        if "_" not in key or key == "foms":
            continue
        method, analysis = key.split("_")
        test = ours["analyses"][method][analysis]
        ft = block["ftests"]
        for row, values in zip(ft["rows"], ft["values"], strict=True):
            check(f"{key} ftests", values, _test_values(test, ft["cols"], row))
        if "diff" in block:
            rows = block["diff"]["rows"]
            rows = [rows] if isinstance(rows, str) else rows
            for row, values in zip(rows, block["diff"]["values"], strict=True):
                a, b = (part.removeprefix("trt") for part in row.split("-"))
                diff = next(d for d in test["differences"] if (d["treatment_a"], d["treatment_b"]) == (a, b))
                check(f"{key} diff", values, _difference_values(diff, block["diff"]["cols"]))
    return errors


@pytest.mark.req("SRS-MRMC-006", "SRS-MRMC-003", "SRS-MRMC-004", "SRS-MRMC-005")
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_agrees_with_rjafroc(name: str) -> None:
    errors = compare(name)
    expected = {"foms", "OR_RRRC ftests", "OR_RRRC diff", "OR_FRRC ftests", "OR_FRRC diff", "OR_RRFC ftests",
                "OR_RRFC diff", "DBM_RRRC ftests"}
    assert set(errors) == expected
    worst = max(errors, key=errors.__getitem__)
    print(f"{name}: max relative difference {errors[worst]:.2e} ({worst})")
    assert errors[worst] < RTOL, errors


@pytest.mark.req("SRS-MRMC-001")
def test_csv_and_imrmc_readings_of_van_dyke_are_identical() -> None:
    results = [analyse(read_reader_study(DATA / f), FigureOfMerit.WILCOXON, (Method.OR, Method.DBM)).to_json()
               for f in ("vandyke_roc.csv", "vandyke_roc.imrmc")]
    for result in results:
        result.pop("input")
    assert results[0] == results[1]
    assert results[0]["data"] == {"paradigm": "ROC", "treatments": 2, "readers": 5, "normal_cases": 69,
                                  "abnormal_cases": 45, "lesions": 45, "max_lesions_per_case": 1}


@pytest.mark.req("SRS-MRMC-001")
def test_jafroc_froc_workbook_is_read_with_lesion_weights() -> None:
    study = read_reader_study(DATA / "froc_example.xlsx")
    assert study.paradigm.value == "FROC"
    assert (study.treatments, study.readers) == (("4", "5"), ("1", "3", "4", "5"))
    assert (study.n_normal, study.n_abnormal) == (100, 100)
    np.testing.assert_allclose(study.lesion_weights.sum(axis=1), 1.0)
    assert study.n_lesions == int((study.lesion_weights > 0).sum())


def write_jafroc(path: Path, truth: list[tuple[Any, ...]], tp: list[tuple[Any, ...]], fp: list[tuple[Any, ...]],
                 truth_header: tuple[str, ...] = ("CaseID", "LesionID", "Weight")) -> Path:
    """A JAFROC workbook (sheets Truth, TP, FP) as RJafroc reads it."""
    import openpyxl

    workbook = openpyxl.Workbook()
    sheets = (("Truth", truth_header, truth),
              ("TP", ("ReaderID", "ModalityID", "CaseID", "LesionID", "TP_Rating"), tp),
              ("FP", ("ReaderID", "ModalityID", "CaseID", "FP_Rating"), fp))
    workbook.remove(workbook.active)
    for title, header, rows in sheets:
        sheet = workbook.create_sheet(title)
        sheet.append(header)
        for row in rows:
            sheet.append(row)
    workbook.save(path)
    return path


def van_dyke_as_jafroc(path: Path, declared: bool) -> Path:
    """Van Dyke as a JAFROC ROC workbook: old layout (paradigm inferred) or new (Paradigm ROC, FCTRL)."""
    study = read_reader_study(DATA / "vandyke_roc.csv")
    cases = [(int(c), 0) for c in study.normal_cases] + [(int(c), 1) for c in study.abnormal_cases]
    header: tuple[str, ...] = ("CaseID", "LesionID", "Weight")
    truth: list[tuple[Any, ...]] = [(case, lesion, 0) for case, lesion in cases]
    if declared:
        header += ("ReaderID", "ModalityID", "Paradigm")
        paradigm = ["ROC", "FCTRL"] + [None] * (len(cases) - 2)
        truth = [(*row, ", ".join(study.readers), ", ".join(study.treatments), p) for row, p in zip(truth, paradigm)]
    ratings = [(int(r), int(t), i, j) for i, t in enumerate(study.treatments) for j, r in enumerate(study.readers)]
    fp = [(r, t, int(c), float(study.nl[i, j, k, 0])) for r, t, i, j in ratings for k, c in enumerate(study.normal_cases)]
    tp = [(r, t, int(c), 1, float(study.ll[i, j, k, 0])) for r, t, i, j in ratings
          for k, c in enumerate(study.abnormal_cases)]
    return write_jafroc(path, truth, tp, fp, header)


@pytest.mark.req("SRS-MRMC-001")
@pytest.mark.parametrize("declared", [False, True], ids=["inferred-roc", "declared-roc"])
def test_jafroc_roc_workbook_gives_the_csv_results(tmp_path: Path, declared: bool) -> None:
    path = van_dyke_as_jafroc(tmp_path / "vandyke.xlsx", declared)
    from_xlsx = analyse(read_reader_study(path), FigureOfMerit.WILCOXON).to_json()
    from_csv = analyse(read_reader_study(DATA / "vandyke_roc.csv"), FigureOfMerit.WILCOXON).to_json()
    for result in (from_xlsx, from_csv):
        result.pop("input")
    assert from_xlsx == from_csv


BAD_WORKBOOKS = {
    "no-fp-sheet": ("no FP or NL worksheet", None),
    "fp-case-unknown": ("case 9 is not in the Truth sheet", ([(1, 0, 0), (2, 0, 0), (3, 1, 0), (4, 1, 0)],
                                                             [], [(1, 1, 9, 2.0)])),
    "weights": ("lesion weights of case 3 sum to 1.5", ([(1, 0, 0), (2, 0, 0), (3, 1, 0.5), (3, 2, 1.0), (4, 1, 0)],
                                                         [], [])),
    "tp-on-normal": ("case 1 is non-diseased", ([(1, 0, 0), (2, 0, 0), (3, 1, 0), (4, 1, 0)],
                                                [(1, 1, 1, 1, 3.0)], [])),
    "text-rating": ("FP_Rating 'high' is not a number", ([(1, 0, 0), (2, 0, 0), (3, 1, 0), (4, 1, 0)],
                                                          [], [(1, 1, 1, "high")])),
}


@pytest.mark.req("SRS-MRMC-002")
@pytest.mark.parametrize("case", sorted(BAD_WORKBOOKS))
def test_bad_jafroc_workbook_is_refused(tmp_path: Path, case: str) -> None:
    from verification.readerstudy import ReaderStudyInputError

    reason, sheets = BAD_WORKBOOKS[case]
    path = tmp_path / f"{case}.xlsx"
    if sheets is None:
        import openpyxl

        workbook = openpyxl.Workbook()
        workbook.active.title = "Truth"
        workbook.create_sheet("TP")
        workbook.save(path)
    else:
        write_jafroc(path, *sheets)
    with pytest.raises(ReaderStudyInputError) as info:
        read_reader_study(path)
    assert str(info.value).startswith(f"{path}: ") and reason in str(info.value), str(info.value)


@pytest.mark.req("SRS-MRMC-001", "SRS-MRMC-002")
def test_workbook_recognised_by_content_and_broken_ones_refused(tmp_path: Path) -> None:
    import zipfile

    from verification.readerstudy import ReaderStudyInputError

    renamed = tmp_path / "study.data"
    renamed.write_bytes((DATA / "froc_example.xlsx").read_bytes())
    assert read_reader_study(renamed).n_lesions == 142
    truncated = tmp_path / "truncated.xlsx"
    truncated.write_bytes((DATA / "froc_example.xlsx").read_bytes()[:20000])
    not_a_workbook = tmp_path / "archive.xlsx"
    with zipfile.ZipFile(not_a_workbook, "w") as archive:
        archive.writestr("readme.txt", "not a workbook")
    for path in (truncated, not_a_workbook):
        with pytest.raises(ReaderStudyInputError, match=f"^{path}: not a readable xlsx workbook"):
            read_reader_study(path)
