"""Reader-study (MRMC) analysis: read ROC/FROC rating files, compute Wilcoxon or wAFROC figures
of merit, and test treatment differences by Obuchowski-Rockette (Hillis) and DBM, as RJafroc.

Layout: :mod:`.data` (the typed study), :mod:`.io` (CSV, iMRMC, JAFROC xlsx readers),
:mod:`.fom` (figures of merit, jackknife, curves), :mod:`.mrmc` (OR and DBM analyses),
:mod:`.report` (HTML and PDF report; imports matplotlib, so not imported here).
"""

from verification.readerstudy.data import Paradigm, ReaderStudy, ReaderStudyInputError
from verification.readerstudy.fom import FigureOfMerit, figures_of_merit, jackknife_foms
from verification.readerstudy.io import read_reader_study
from verification.readerstudy.mrmc import Method, ReaderStudyResult, analyse

__all__ = [
    "FigureOfMerit",
    "Method",
    "Paradigm",
    "ReaderStudy",
    "ReaderStudyInputError",
    "ReaderStudyResult",
    "analyse",
    "figures_of_merit",
    "jackknife_foms",
    "read_reader_study",
]
