"""Multi-reader multi-case significance testing: Obuchowski-Rockette (Hillis) and DBM.

Both methods start from the figures of merit ``theta_ij`` (treatment i, reader j) and their
leave-one-case-out values ``theta_ij(k)`` over all K cases, and follow RJafroc's conventions
(``St(..., covEstMethod = "jackknife")``):

* **OR**: the error covariances Var, Cov1 (same reader, different treatments), Cov2 (same
  treatment, different readers) and Cov3 (both different) are averages of the jackknife
  covariance matrix ``(K-1)/K * sum_k d_ij(k) d_i'j'(k)``. RRRC uses Hillis' denominator
  ``MS(TR) + J max(Cov2 - Cov3, 0)`` with ``ddf = den^2 / (MS(TR)^2 / ((I-1)(J-1)))``
  (Hillis 2007, 2008); FRRC a chi-square test on ``Var - Cov1 + (J-1) max(Cov2 - Cov3, 0)``
  with normal-approximation differences; RRFC an F test on MS(TR).
* **DBM**: pseudovalues ``Y_ijk = K theta_ij - (K-1) theta_ij(k)``, shifted so that their mean
  over cases is ``theta_ij`` (RJafroc's scaling), analysed as a three-way ANOVA. RRRC uses
  ``MS(TR) + max(MS(TC) - MS(TRC), 0)`` with Hillis' ddf; FRRC the F test on MS(TC) with
  ``(I-1)(K-1)`` df; RRFC the F test on MS(TR).

Treatment differences are reported for every pair (i < i'), as "FOM of the first minus FOM of
the second, averaged over readers", with the standard error, df, statistic, two-sided p and
``1 - alpha`` confidence interval of the analysis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from verification.readerstudy.data import ReaderStudy, ReaderStudyInputError
from verification.readerstudy.fom import FigureOfMerit, check_fom, jackknife_foms


class Method(StrEnum):
    OR = "OR"
    DBM = "DBM"


ANALYSES = ("RRRC", "FRRC", "RRFC")


def _div(numerator: float, denominator: float) -> float:
    """IEEE division (inf or NaN instead of an exception) for degenerate data, such as equal ratings."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(numerator) / np.float64(denominator))


def _sqrt(value: float) -> float:
    with np.errstate(invalid="ignore"):
        return float(np.sqrt(np.float64(value)))


def _finite(value: float) -> float | None:
    """JSON has no NaN/inf: undefined statistics (degenerate data) become null."""
    return float(value) if np.isfinite(value) else None


@dataclass(frozen=True)
class Difference:
    """One treatment difference ``treatment_a - treatment_b`` (reader-averaged FOMs)."""

    treatment_a: str
    treatment_b: str
    estimate: float
    stderr: float
    df: float | None  # None: normal approximation
    statistic: float  # t, or z when df is None
    p: float
    ci_lower: float
    ci_upper: float

    def to_json(self) -> dict[str, Any]:
        return {
            "treatment_a": self.treatment_a, "treatment_b": self.treatment_b,
            "estimate": float(self.estimate), "stderr": _finite(self.stderr),
            "df": None if self.df is None else _finite(self.df),
            "statistic": _finite(self.statistic), "p": _finite(self.p),
            "ci_lower": _finite(self.ci_lower), "ci_upper": _finite(self.ci_upper),
        }


@dataclass(frozen=True)
class TreatmentTest:
    """The overall test of equal treatment FOMs in one analysis (RRRC, FRRC or RRFC).

    ``df_den`` is None for a chi-square test (OR FRRC), whose statistic is then reported as
    ``chisq`` with ``df = df_num``.
    """

    analysis: str
    statistic: float
    df_num: float
    df_den: float | None
    p: float
    ms_treatment: float
    ms_error: float
    differences: tuple[Difference, ...]

    @property
    def is_chisq(self) -> bool:
        return self.df_den is None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any]
        if self.is_chisq:
            out = {"chisq": _finite(self.statistic), "df": float(self.df_num)}
        else:
            assert self.df_den is not None
            out = {"f": _finite(self.statistic), "df_num": float(self.df_num), "df_den": _finite(self.df_den)}
        out |= {"p": _finite(self.p), "ms_treatment": float(self.ms_treatment), "ms_error": _finite(self.ms_error),
                "differences": [d.to_json() for d in self.differences]}
        return out


@dataclass(frozen=True)
class MethodResult:
    """One method's three analyses plus its variance components and mean squares."""

    method: Method
    tests: dict[str, TreatmentTest]
    variance_components: dict[str, float]
    mean_squares: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {name: self.tests[name].to_json() for name in ANALYSES}


@dataclass(frozen=True)
class ReaderStudyResult:
    """Everything `cad reader-study` reports."""

    study: ReaderStudy
    fom: FigureOfMerit
    foms: np.ndarray  # (I, J)
    alpha: float
    methods: dict[Method, MethodResult] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        s = self.study
        return {
            "fom": self.fom.value,
            "alpha": self.alpha,
            "input": s.source,
            "data": s.describe(),
            "treatments": list(s.treatments),
            "readers": list(s.readers),
            "foms": {t: {r: float(self.foms[i, j]) for j, r in enumerate(s.readers)}
                     for i, t in enumerate(s.treatments)},
            "treatment_means": {t: float(self.foms[i].mean()) for i, t in enumerate(s.treatments)},
            "analyses": {m.value: r.to_json() for m, r in self.methods.items()},
            "variance_components": {
                m.value: {"components": {k: float(v) for k, v in r.variance_components.items()},
                          "mean_squares": {k: float(v) for k, v in r.mean_squares.items()}}
                for m, r in self.methods.items()
            },
        }


# --------------------------------------------------------------------------- shared pieces


def _differences(treatments: tuple[str, ...], foms: np.ndarray, stderr: float, df: float | None,
                 alpha: float) -> tuple[Difference, ...]:
    """All pairs i < i' of reader-averaged treatment FOM differences with one common stderr."""
    means = foms.mean(axis=1)
    dist = stats.norm() if df is None else stats.t(df)
    quantile = dist.ppf(1 - alpha / 2)
    out = []
    for a, b in combinations(range(len(treatments)), 2):
        estimate = float(means[a] - means[b])
        statistic = _div(estimate, stderr)
        out.append(Difference(
            treatments[a], treatments[b], estimate, stderr, df, statistic, float(2 * dist.sf(abs(statistic))),
            float(estimate - quantile * stderr), float(estimate + quantile * stderr)))
    return tuple(out)


def _f_test(analysis: str, ms_t: float, ms_den: float, df_num: float, df_den: float, stderr: float,
            treatments: tuple[str, ...], foms: np.ndarray, alpha: float) -> TreatmentTest:
    f = _div(ms_t, ms_den)
    return TreatmentTest(analysis, f, df_num, float(df_den), float(stats.f.sf(f, df_num, df_den)),
                         float(ms_t), float(ms_den), _differences(treatments, foms, stderr, df_den, alpha))


def _hillis_ddf(ms_den: float, ms_tr: float, i: int, j: int) -> float:
    """Hillis (2007) denominator degrees of freedom for the RRRC F test."""
    return _div(ms_den**2, _div(ms_tr**2, (i - 1) * (j - 1)))


def _fom_mean_squares(foms: np.ndarray) -> tuple[float, float, float]:
    """MS(T), MS(R), MS(TR) of the two-way treatment x reader table of FOMs."""
    i, j = foms.shape
    grand, trt, rdr = foms.mean(), foms.mean(axis=1), foms.mean(axis=0)
    ms_t = j * np.sum((trt - grand) ** 2) / (i - 1)
    ms_r = i * np.sum((rdr - grand) ** 2) / (j - 1)
    ms_tr = np.sum((foms - trt[:, None] - rdr[None, :] + grand) ** 2) / ((i - 1) * (j - 1))
    return float(ms_t), float(ms_r), float(ms_tr)


# --------------------------------------------------------------------------- Obuchowski-Rockette


def or_covariances(jackknife: np.ndarray) -> dict[str, float]:
    """OR error variance and covariances (Var, Cov1, Cov2, Cov3) from ``(I, J, K)`` jackknife FOMs.

    The jackknife covariance of FOMs ij and i'j' is ``(K-1)/K sum_k d_ij(k) d_i'j'(k)``, with
    ``d`` the deviations from the mean over k (Efron-Stein inflation, as RJafroc).
    """
    i, j, k = jackknife.shape
    dev = jackknife - jackknife.mean(axis=2, keepdims=True)
    cov = np.einsum("abk,cdk->abcd", dev, dev) * (k - 1) / k
    same_t = np.eye(i, dtype=bool)[:, None, :, None]
    same_r = np.eye(j, dtype=bool)[None, :, None, :]

    def mean_where(mask: np.ndarray) -> float:
        mask = np.broadcast_to(mask, cov.shape)
        return float(cov[mask].mean()) if mask.any() else 0.0

    return {
        "var": mean_where(same_t & same_r),
        "cov1": mean_where(~same_t & same_r),
        "cov2": mean_where(same_t & ~same_r),
        "cov3": mean_where(~same_t & ~same_r),
    }


def or_analysis(foms: np.ndarray, jackknife: np.ndarray, treatments: tuple[str, ...],
                alpha: float = 0.05) -> MethodResult:
    """Obuchowski-Rockette analyses (RRRC with Hillis ddf, FRRC, RRFC) from jackknife covariances."""
    i, j = foms.shape
    ms_t, ms_r, ms_tr = _fom_mean_squares(foms)
    c = or_covariances(jackknife)
    cov23 = max(c["cov2"] - c["cov3"], 0.0)
    tests: dict[str, TreatmentTest] = {}

    den = ms_tr + j * cov23
    ddf = _hillis_ddf(den, ms_tr, i, j)
    tests["RRRC"] = _f_test("RRRC", ms_t, den, i - 1, ddf, _sqrt(2 * den / j), treatments, foms, alpha)

    den = c["var"] - c["cov1"] + (j - 1) * cov23
    chisq = _div((i - 1) * ms_t, den)
    tests["FRRC"] = TreatmentTest("FRRC", chisq, i - 1, None, float(stats.chi2.sf(chisq, i - 1)), ms_t,
                                  float(den), _differences(treatments, foms, _sqrt(2 * den / j), None, alpha))

    tests["RRFC"] = _f_test("RRFC", ms_t, ms_tr, i - 1, (i - 1) * (j - 1), _sqrt(2 * ms_tr / j),
                            treatments, foms, alpha)

    var_tr = ms_tr - c["var"] + c["cov1"] + cov23
    var_r = (ms_r - var_tr - c["var"] + c["cov2"] - (i - 1) * (c["cov1"] - c["cov3"])) / i
    components = {"var_r": var_r, "var_tr": var_tr, **c}
    return MethodResult(Method.OR, tests, components, {"T": ms_t, "R": ms_r, "TR": ms_tr})


# --------------------------------------------------------------------------- DBM


def pseudovalues(foms: np.ndarray, jackknife: np.ndarray) -> np.ndarray:
    """DBM jackknife pseudovalues ``(I, J, K)``, shifted to average ``theta_ij`` over cases (RJafroc)."""
    k = jackknife.shape[2]
    values = k * foms[..., None] - (k - 1) * jackknife
    return values + (foms - values.mean(axis=2))[..., None]


def dbm_mean_squares(y: np.ndarray) -> dict[str, float]:
    """Mean squares of the treatment x reader x case ANOVA of pseudovalues (one observation per cell)."""
    i, j, k = y.shape
    m = y.mean()
    m_i, m_j, m_k = y.mean(axis=(1, 2)), y.mean(axis=(0, 2)), y.mean(axis=(0, 1))
    m_ij, m_ik, m_jk = y.mean(axis=2), y.mean(axis=1), y.mean(axis=0)
    residual = (y - m_ij[:, :, None] - m_ik[:, None, :] - m_jk[None, :, :]
                + m_i[:, None, None] + m_j[None, :, None] + m_k[None, None, :] - m)
    return {
        "T": float(j * k * np.sum((m_i - m) ** 2) / (i - 1)),
        "R": float(i * k * np.sum((m_j - m) ** 2) / (j - 1)),
        "C": float(i * j * np.sum((m_k - m) ** 2) / (k - 1)),
        "TR": float(k * np.sum((m_ij - m_i[:, None] - m_j[None, :] + m) ** 2) / ((i - 1) * (j - 1))),
        "TC": float(j * np.sum((m_ik - m_i[:, None] - m_k[None, :] + m) ** 2) / ((i - 1) * (k - 1))),
        "RC": float(i * np.sum((m_jk - m_j[:, None] - m_k[None, :] + m) ** 2) / ((j - 1) * (k - 1))),
        "TRC": float(np.sum(residual**2) / ((i - 1) * (j - 1) * (k - 1))),
    }


def dbm_analysis(foms: np.ndarray, jackknife: np.ndarray, treatments: tuple[str, ...],
                 alpha: float = 0.05) -> MethodResult:
    """Dorfman-Berbaum-Metz analyses of jackknife pseudovalues (RRRC with Hillis ddf, FRRC, RRFC)."""
    i, j, k = jackknife.shape
    ms = dbm_mean_squares(pseudovalues(foms, jackknife))
    tests: dict[str, TreatmentTest] = {}

    den = ms["TR"] + max(ms["TC"] - ms["TRC"], 0.0)
    tests["RRRC"] = _f_test("RRRC", ms["T"], den, i - 1, _hillis_ddf(den, ms["TR"], i, j),
                            _sqrt(2 * den / (j * k)), treatments, foms, alpha)
    tests["FRRC"] = _f_test("FRRC", ms["T"], ms["TC"], i - 1, (i - 1) * (k - 1),
                            _sqrt(2 * ms["TC"] / (j * k)), treatments, foms, alpha)
    tests["RRFC"] = _f_test("RRFC", ms["T"], ms["TR"], i - 1, (i - 1) * (j - 1),
                            _sqrt(2 * ms["TR"] / (j * k)), treatments, foms, alpha)

    components = {
        "var_r": (ms["R"] - ms["TR"] - ms["RC"] + ms["TRC"]) / (i * k),
        "var_c": (ms["C"] - ms["TC"] - ms["RC"] + ms["TRC"]) / (i * j),
        "var_tr": (ms["TR"] - ms["TRC"]) / k,
        "var_tc": (ms["TC"] - ms["TRC"]) / j,
        "var_rc": (ms["RC"] - ms["TRC"]) / i,
        "var_err": ms["TRC"],
    }
    return MethodResult(Method.DBM, tests, components, ms)


# --------------------------------------------------------------------------- entry point


def analyse(study: ReaderStudy, fom: FigureOfMerit, methods: tuple[Method, ...] = (Method.OR, Method.DBM),
            alpha: float = 0.05) -> ReaderStudyResult:
    """Figures of merit and the requested MRMC analyses of ``study``.

    Raises :class:`~verification.readerstudy.data.ReaderStudyInputError` when the figure of merit
    does not fit the data or the design is too small (fewer than 2 treatments, readers or cases
    of each truth).
    """
    check_fom(study, fom)
    if study.n_treatments < 2 or study.n_readers < 2:
        raise ReaderStudyInputError(
            f"{study.source}: an MRMC analysis needs at least 2 treatments and 2 readers "
            f"(found {study.n_treatments} and {study.n_readers})")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    foms, jackknife = jackknife_foms(study, fom)
    runners = {Method.OR: or_analysis, Method.DBM: dbm_analysis}
    results = {m: runners[m](foms, jackknife, study.treatments, alpha) for m in methods}
    return ReaderStudyResult(study, fom, foms, alpha, results)
