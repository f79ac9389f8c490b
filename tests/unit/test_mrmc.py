"""Reader-study statistics on synthetic studies: jackknife, identities, symmetry, input refusal."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from verification.readerstudy import FigureOfMerit, Method, Paradigm, ReaderStudy, ReaderStudyInputError, analyse
from verification.readerstudy.data import UNMARKED, roc_study
from verification.readerstudy.fom import empirical_curve, figures_of_merit, jackknife_foms
from verification.readerstudy.io import read_reader_study
from verification.readerstudy.mrmc import or_covariances, pseudovalues

SCHEMA = json.loads((Path(__file__).parents[2] / "cad" / "schemas" / "reader_study.schema.json").read_text())


def random_roc(seed: int = 1, treatments: int = 3, readers: int = 4, k1: int = 30, k2: int = 25) -> ReaderStudy:
    """A correlated ROC study rated on a 1-5 scale (many ties), treatment effects of 0, 0.3, 0.6."""
    rng = np.random.default_rng(seed)
    case_normal = rng.normal(size=k1)
    case_abnormal = rng.normal(size=k2)
    effect = np.arange(treatments)[:, None, None] * 0.3
    reader = rng.normal(scale=0.3, size=(1, readers, 1))
    normal = case_normal + reader + rng.normal(scale=0.7, size=(treatments, readers, k1))
    abnormal = 1.2 + effect + case_abnormal + reader + rng.normal(scale=0.7, size=(treatments, readers, k2))
    cut = np.array([-0.5, 0.3, 1.0, 1.8])
    return roc_study(tuple(f"T{i}" for i in range(treatments)), tuple(f"R{j}" for j in range(readers)),
                     tuple(f"n{k}" for k in range(k1)), tuple(f"a{k}" for k in range(k2)),
                     1.0 + np.searchsorted(cut, normal), 1.0 + np.searchsorted(cut, abnormal), "synthetic-roc")


def random_froc(seed: int = 2, treatments: int = 2, readers: int = 3, k1: int = 20, k2: int = 18) -> ReaderStudy:
    """An FROC study: up to 3 lesions per case with unequal weights, 0-3 marks per case, ties, unmarked lesions."""
    rng = np.random.default_rng(seed)
    per_case = rng.integers(1, 4, size=k2)
    weights = np.zeros((k2, 3))
    for b, n in enumerate(per_case):
        w = rng.uniform(0.2, 1.0, size=n)
        weights[b, :n] = w / w.sum()
    nl = np.full((treatments, readers, k1 + k2, 3), UNMARKED)
    n_marks = rng.integers(0, 4, size=(treatments, readers, k1 + k2))
    for idx in np.ndindex(*n_marks.shape):
        nl[idx][:n_marks[idx]] = np.sort(rng.integers(1, 6, size=n_marks[idx]))[::-1]
    ll = rng.integers(1, 6, size=(treatments, readers, k2, 3)).astype(float) + np.arange(treatments)[:, None, None, None]
    ll[rng.random(ll.shape) < 0.3] = UNMARKED
    ll[:, :, np.arange(3)[None, :] >= per_case[:, None]] = UNMARKED
    return ReaderStudy(Paradigm.FROC, tuple(str(i) for i in range(treatments)), tuple(str(j) for j in range(readers)),
                       tuple(str(k) for k in range(k1)), tuple(str(k1 + k) for k in range(k2)), nl, ll, weights,
                       per_case, "synthetic-froc")


def brute_force_fom(study: ReaderStudy, fom: FigureOfMerit, normal: np.ndarray, abnormal: np.ndarray) -> np.ndarray:
    """The FOM from its definition (explicit kernel over all pairs) on a subset of cases."""
    k1 = study.n_normal
    if fom is FigureOfMerit.WILCOXON:
        x, y, w = study.nl[:, :, :k1, 0], study.ll[..., :1], np.ones((study.n_abnormal, 1))
    else:
        x, y, w = study.nl[:, :, :k1].max(axis=3), study.ll, study.lesion_weights
    x, y, w = x[:, :, normal], y[:, :, abnormal], w[abnormal]
    psi = (y[:, :, None] > x[..., None, None]) + 0.5 * (y[:, :, None] == x[..., None, None])
    return (psi * w).sum(axis=(2, 3, 4)) / (len(normal) * len(abnormal))


@pytest.mark.req("SRS-MRMC-003")
@pytest.mark.parametrize(("make", "fom"), [(random_roc, FigureOfMerit.WILCOXON), (random_froc, FigureOfMerit.WAFROC)])
def test_jackknife_matches_recomputation_without_each_case(make, fom) -> None:  # type: ignore[no-untyped-def]
    study = make()
    foms, jackknife = jackknife_foms(study, fom)
    k1, k2 = study.n_normal, study.n_abnormal
    everything = brute_force_fom(study, fom, np.arange(k1), np.arange(k2))
    np.testing.assert_allclose(foms, everything, rtol=1e-13)
    np.testing.assert_allclose(figures_of_merit(study, fom), everything, rtol=1e-13)
    for k in range(k1 + k2):
        normal = np.delete(np.arange(k1), k) if k < k1 else np.arange(k1)
        abnormal = np.delete(np.arange(k2), k - k1) if k >= k1 else np.arange(k2)
        np.testing.assert_allclose(jackknife[:, :, k], brute_force_fom(study, fom, normal, abnormal), rtol=1e-12)


@pytest.mark.req("SRS-MRMC-003")
@pytest.mark.parametrize(("make", "fom"), [(random_roc, FigureOfMerit.WILCOXON), (random_froc, FigureOfMerit.WAFROC)])
def test_fom_is_area_under_empirical_curve(make, fom) -> None:  # type: ignore[no-untyped-def]
    study = make()
    foms = figures_of_merit(study, fom)
    for i, j in np.ndindex(*foms.shape):
        x, y = empirical_curve(study, fom, i, j)
        assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= -1e-15)
        assert np.trapezoid(y, x) == pytest.approx(foms[i, j], rel=1e-12)


@pytest.mark.req("SRS-MRMC-004")
def test_or_covariances_match_their_definition() -> None:
    jk = np.random.default_rng(5).normal(size=(3, 4, 12))
    c = or_covariances(jk)
    k = jk.shape[2]
    full = np.cov(jk.reshape(12, k)) * (k - 1) ** 2 / k  # R's cov() with RJafroc's Efron-Stein factor
    full = full.reshape(3, 4, 3, 4)
    var = np.mean([full[i, j, i, j] for i in range(3) for j in range(4)])
    cov1 = np.mean([full[i, j, p, j] for i in range(3) for p in range(3) if p != i for j in range(4)])
    cov2 = np.mean([full[i, j, i, q] for i in range(3) for j in range(4) for q in range(4) if q != j])
    cov3 = np.mean([full[i, j, p, q] for i in range(3) for p in range(3) if p != i
                    for j in range(4) for q in range(4) if q != j])
    assert (c["var"], c["cov1"], c["cov2"], c["cov3"]) == pytest.approx((var, cov1, cov2, cov3), rel=1e-12)


@pytest.mark.req("SRS-MRMC-005")
@pytest.mark.parametrize("seed", [1, 7, 11])
def test_dbm_and_or_rrrc_agree_for_wilcoxon_jackknife(seed: int) -> None:
    """Hillis (2005): with the jackknife, DBM and OR give the same RRRC F and ddf (and RRFC F)."""
    result = analyse(random_roc(seed), FigureOfMerit.WILCOXON, (Method.OR, Method.DBM))
    o, d = result.methods[Method.OR].tests, result.methods[Method.DBM].tests
    assert d["RRRC"].statistic == pytest.approx(o["RRRC"].statistic, rel=1e-10)
    assert d["RRRC"].df_den == pytest.approx(o["RRRC"].df_den, rel=1e-10)
    assert d["RRRC"].p == pytest.approx(o["RRRC"].p, rel=1e-9)
    assert d["RRFC"].statistic == pytest.approx(o["RRFC"].statistic, rel=1e-10)
    for a, b in zip(o["RRRC"].differences, d["RRRC"].differences, strict=True):
        assert (b.stderr, b.ci_lower, b.ci_upper) == pytest.approx((a.stderr, a.ci_lower, a.ci_upper), rel=1e-10)


@pytest.mark.req("SRS-MRMC-005")
def test_pseudovalues_average_to_the_fom() -> None:
    foms, jk = jackknife_foms(random_froc(), FigureOfMerit.WAFROC)
    np.testing.assert_allclose(pseudovalues(foms, jk).mean(axis=2), foms, rtol=1e-13)


def _reversed(study: ReaderStudy) -> ReaderStudy:
    return ReaderStudy(study.paradigm, study.treatments[::-1], study.readers, study.normal_cases,
                       study.abnormal_cases, study.nl[::-1], study.ll[::-1], study.lesion_weights,
                       study.lesions_per_case, study.source)


@pytest.mark.req("SRS-MRMC-004", "SRS-MRMC-005")
@pytest.mark.parametrize(("make", "fom"), [(random_roc, FigureOfMerit.WILCOXON), (random_froc, FigureOfMerit.WAFROC)])
def test_every_pair_present_and_differences_antisymmetric(make, fom) -> None:  # type: ignore[no-untyped-def]
    study = make()
    forward = analyse(study, fom, (Method.OR, Method.DBM))
    backward = analyse(_reversed(study), fom, (Method.OR, Method.DBM))
    means = dict(zip(study.treatments, forward.foms.mean(axis=1), strict=True))
    for method in (Method.OR, Method.DBM):
        for name in ("RRRC", "FRRC", "RRFC"):
            f, b = forward.methods[method].tests[name], backward.methods[method].tests[name]
            assert f.statistic == pytest.approx(b.statistic, rel=1e-10)
            pairs = {(d.treatment_a, d.treatment_b): d for d in f.differences}
            assert set(pairs) == set(combinations(study.treatments, 2))
            for d in b.differences:
                e = pairs[(d.treatment_b, d.treatment_a)]
                assert e.estimate == pytest.approx(means[e.treatment_a] - means[e.treatment_b], rel=1e-12)
                assert d.estimate == pytest.approx(-e.estimate, rel=1e-12)
                assert (d.stderr, d.p) == pytest.approx((e.stderr, e.p), rel=1e-10)
                assert (d.ci_lower, d.ci_upper) == pytest.approx((-e.ci_upper, -e.ci_lower), rel=1e-10)
                assert d.ci_lower < d.estimate < d.ci_upper
            assert (f.df_den is None) == (method is Method.OR and name == "FRRC")


@pytest.mark.req("SRS-MRMC-007")
@pytest.mark.parametrize("method", [(Method.OR,), (Method.DBM,), (Method.OR, Method.DBM)])
def test_json_valid_against_schema(method: tuple[Method, ...]) -> None:
    output = analyse(random_roc(3), FigureOfMerit.WILCOXON, method).to_json()
    jsonschema.validate(json.loads(json.dumps(output, allow_nan=False)), SCHEMA)
    assert output["treatments"] == ["T0", "T1", "T2"] and set(output["analyses"]) == {m.value for m in method}
    assert len(output["analyses"][method[0].value]["RRRC"]["differences"]) == 3


@pytest.mark.req("SRS-MRMC-007")
def test_degenerate_study_gives_null_not_nan() -> None:
    """Identical ratings everywhere: every FOM is 1/2, the tests are undefined and reported as null."""
    flat = roc_study(("A", "B"), ("1", "2"), ("n1", "n2", "n3"), ("a1", "a2"),
                     np.ones((2, 2, 3)), np.ones((2, 2, 2)), "flat")
    output = analyse(flat, FigureOfMerit.WILCOXON, (Method.OR, Method.DBM)).to_json()
    jsonschema.validate(json.loads(json.dumps(output, allow_nan=False)), SCHEMA)
    assert output["foms"]["A"] == {"1": 0.5, "2": 0.5}
    assert output["analyses"]["OR"]["RRRC"]["f"] is None


# --------------------------------------------------------------------------- input refusal


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD_CSV = "reader,treatment,case,truth,rating\n" + "".join(
    f"{r},{t},{c},{int(c > 2)},{(c * 7 + r + len(t) * (t == 'B')) % 5}\n"
    for r in (1, 2) for t in ("A", "B") for c in range(1, 6))


@pytest.mark.req("SRS-MRMC-001")
def test_csv_columns_in_any_order_and_ids_kept_as_text(tmp_path: Path) -> None:
    rows = [line.split(",") for line in GOOD_CSV.strip().splitlines()]
    shuffled = "\n".join(",".join([r[4], r[2], r[0], r[3], r[1]]) for r in rows) + "\n"
    a = read_reader_study(_write(tmp_path, "a.csv", GOOD_CSV))
    b = read_reader_study(_write(tmp_path, "b.txt", shuffled))
    assert a.treatments == b.treatments == ("A", "B") and a.readers == ("1", "2")
    assert a.normal_cases == ("1", "2") and a.abnormal_cases == ("3", "4", "5")
    np.testing.assert_array_equal(a.nl, b.nl)
    np.testing.assert_array_equal(a.ll, b.ll)


BAD_INPUTS = {
    "no-header.csv": ("1,A,1,0,3\n", "header lacks column(s)"),
    "bad-rating.csv": (GOOD_CSV.replace("1,A,1,0,", "1,A,1,0,x", 1), "line 2: rating 'x"),
    "bad-truth.csv": (GOOD_CSV.replace("1,A,1,0,", "1,A,1,2,", 1), "truth must be 0"),
    "truth-flip.csv": (GOOD_CSV.replace("1,B,1,0,", "1,B,1,1,", 1), "case 1 has truth 1 here but 0 before"),
    "duplicate.csv": (GOOD_CSV + "1,A,1,0,3\n", "second rating of case 1"),
    "not-crossed.csv": ("\n".join(GOOD_CSV.splitlines()[:-1]) + "\n", "not fully crossed"),
    "bad.imrmc": ("N0:2\nBEGIN DATA:\n-1,1,0,0\n1,1,A\n", "expected readerID,caseID,modalityID,score"),
    "untruthed.imrmc": ("BEGIN DATA:\n-1,1,0,0\n1,1,A,3\n1,2,A,4\n", "case 2 has scores but no truth line"),
    "binary.csv": ("\udcff", "not a reader-study file"),
    "empty.csv": ("", "empty file"),
}


@pytest.mark.req("SRS-MRMC-002")
@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_refused_with_file_and_reason(tmp_path: Path, name: str) -> None:
    text, reason = BAD_INPUTS[name]
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ReaderStudyInputError) as info:
        read_reader_study(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and reason in message and "\n" not in message


@pytest.mark.req("SRS-MRMC-002")
def test_fom_must_fit_the_data_and_design_be_large_enough(tmp_path: Path) -> None:
    study = read_reader_study(_write(tmp_path, "ok.csv", GOOD_CSV))
    with pytest.raises(ReaderStudyInputError, match="holds ROC data; --fom wafroc needs FROC data"):
        analyse(study, FigureOfMerit.WAFROC)
    one_reader = "".join(line + "\n" for line in GOOD_CSV.splitlines() if not line.startswith("2,"))
    with pytest.raises(ReaderStudyInputError, match="at least 2 treatments and 2 readers"):
        analyse(read_reader_study(_write(tmp_path, "one.csv", one_reader)), FigureOfMerit.WILCOXON)
    one_normal = "".join(line + "\n" for line in GOOD_CSV.splitlines() if ",1,0," not in line)
    with pytest.raises(ReaderStudyInputError, match="at least 2 non-diseased and 2 diseased"):
        analyse(read_reader_study(_write(tmp_path, "few.csv", one_normal)), FigureOfMerit.WILCOXON)
