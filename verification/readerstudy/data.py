"""The typed reader-study dataset: treatments x readers x cases, with ROC or FROC ratings.

One representation serves both paradigms (as in RJafroc): non-lesion localisation ratings
``nl`` on every case and lesion localisation ratings ``ll`` on every lesion of the diseased
cases, ``-inf`` where nothing was marked. ROC data is the special case of one rating per case:
non-diseased cases carry it in ``nl[..., 0]``, diseased cases in ``ll[..., 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

UNMARKED = -np.inf
"""Rating of a lesion or case that received no mark (RJafroc's convention)."""


class ReaderStudyInputError(ValueError):
    """An input file cannot be read as a reader study; the message names the file and the problem."""


class Paradigm(StrEnum):
    ROC = "ROC"
    FROC = "FROC"


@dataclass(frozen=True)
class ReaderStudy:
    """A fully crossed multi-reader multi-case study.

    Attributes
    ----------
    paradigm
        ROC (one rating per case) or FROC (any number of marks per case).
    treatments, readers
        Identifiers as found in the input, in analysis order.
    normal_cases, abnormal_cases
        Case identifiers; case index ``k`` runs over normal cases first, then abnormal ones.
    nl
        ``(I, J, K, max_nl)`` non-lesion localisation (false-positive) ratings, ``-inf`` unmarked.
    ll
        ``(I, J, K2, max_lesions)`` lesion localisation ratings, ``-inf`` unmarked or no lesion.
    lesion_weights
        ``(K2, max_lesions)`` weight of each lesion (summing to 1 per case), 0 where no lesion.
    lesions_per_case
        ``(K2,)`` number of lesions of each abnormal case.
    source
        The file the study was read from (for messages and reports).
    """

    paradigm: Paradigm
    treatments: tuple[str, ...]
    readers: tuple[str, ...]
    normal_cases: tuple[str, ...]
    abnormal_cases: tuple[str, ...]
    nl: np.ndarray
    ll: np.ndarray
    lesion_weights: np.ndarray
    lesions_per_case: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        i, j, k1, k2 = len(self.treatments), len(self.readers), len(self.normal_cases), len(self.abnormal_cases)
        if self.nl.ndim != 4 or self.nl.shape[:3] != (i, j, k1 + k2):
            raise ValueError(f"nl has shape {self.nl.shape}, expected ({i}, {j}, {k1 + k2}, n)")
        if self.ll.ndim != 4 or self.ll.shape[:3] != (i, j, k2):
            raise ValueError(f"ll has shape {self.ll.shape}, expected ({i}, {j}, {k2}, n)")
        if self.lesion_weights.shape != (k2, self.ll.shape[3]) or self.lesions_per_case.shape != (k2,):
            raise ValueError("lesion weights / counts do not match the abnormal cases")
        if np.isnan(self.nl).any() or np.isnan(self.ll).any():
            raise ValueError("ratings must not be NaN (use -inf for unmarked)")

    @property
    def n_treatments(self) -> int:
        return len(self.treatments)

    @property
    def n_readers(self) -> int:
        return len(self.readers)

    @property
    def n_normal(self) -> int:
        return len(self.normal_cases)

    @property
    def n_abnormal(self) -> int:
        return len(self.abnormal_cases)

    @property
    def n_cases(self) -> int:
        return self.n_normal + self.n_abnormal

    @property
    def n_lesions(self) -> int:
        return int(self.lesions_per_case.sum())

    def describe(self) -> dict[str, object]:
        """Counts for reports and the JSON output."""
        return {
            "paradigm": self.paradigm.value,
            "treatments": self.n_treatments,
            "readers": self.n_readers,
            "normal_cases": self.n_normal,
            "abnormal_cases": self.n_abnormal,
            "lesions": self.n_lesions,
            "max_lesions_per_case": int(self.lesions_per_case.max(initial=0)),
        }


def roc_study(
    treatments: tuple[str, ...],
    readers: tuple[str, ...],
    normal_cases: tuple[str, ...],
    abnormal_cases: tuple[str, ...],
    normal_ratings: np.ndarray,
    abnormal_ratings: np.ndarray,
    source: str = "",
) -> ReaderStudy:
    """Build an ROC study from ``(I, J, K1)`` and ``(I, J, K2)`` rating arrays."""
    i, j = len(treatments), len(readers)
    k2 = len(abnormal_cases)
    nl = np.concatenate([normal_ratings, np.full((i, j, k2), UNMARKED)], axis=2)[..., None]
    return ReaderStudy(
        paradigm=Paradigm.ROC,
        treatments=treatments,
        readers=readers,
        normal_cases=normal_cases,
        abnormal_cases=abnormal_cases,
        nl=nl.astype(float),
        ll=np.asarray(abnormal_ratings, dtype=float)[..., None],
        lesion_weights=np.ones((k2, 1)),
        lesions_per_case=np.ones(k2, dtype=int),
        source=source,
    )


def natural_order(ids: set[str] | list[str]) -> tuple[str, ...]:
    """Identifiers sorted numerically when all are numbers, else as text (RJafroc sorts IDs too)."""
    unique = set(ids)
    try:
        return tuple(sorted(unique, key=lambda s: (float(s), s)))
    except ValueError:
        return tuple(sorted(unique))
