"""Wall-clock time per processing stage of an analysis (decode, preprocess, model, rescore,
linking, outputs), for `cad bench` and the run summary of `cad detect`.

Timing never changes what is computed: the pipeline takes a :class:`StageClock` and calls
:meth:`StageClock.stage` around each stage; without one, :data:`NO_CLOCK` does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum


class Stage(str, Enum):
    """The stages of one study's analysis, in flow order (docs/architecture.md)."""

    DECODE = "decode"
    PREPROCESS = "preprocess"
    MODEL = "model"
    #: second stage: blob candidates, patches, dual-view rescoring, per-view suppression
    RESCORE = "rescore"
    LINKING = "linking"
    OUTPUTS = "outputs"


class StageClock:
    """Accumulates wall-clock seconds per stage (a stage may be entered many times)."""

    def __init__(self) -> None:
        self.seconds: dict[Stage, float] = {stage: 0.0 for stage in Stage}

    @contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def total(self) -> float:
        return sum(self.seconds.values())

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        return {stage.value: round(value, digits) for stage, value in self.seconds.items()}


class _NoClock(StageClock):
    @contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        yield


#: the clock used when the caller does not time the analysis
NO_CLOCK: StageClock = _NoClock()
