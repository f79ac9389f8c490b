"""Stage clock used by `cad bench` and `cad detect` (SRS-RT-007)."""

from __future__ import annotations

import time

import pytest

from cad.stages import NO_CLOCK, Stage, StageClock


@pytest.mark.req("SRS-RT-007")
def test_stage_clock_accumulates_per_stage() -> None:
    clock = StageClock()
    for _ in range(2):
        with clock.stage(Stage.MODEL):
            time.sleep(0.01)
    with clock.stage(Stage.DECODE):
        pass
    assert clock.seconds[Stage.MODEL] >= 0.02
    assert clock.seconds[Stage.DECODE] < clock.seconds[Stage.MODEL]
    assert clock.total() == pytest.approx(sum(clock.seconds.values()))
    assert list(clock.as_dict()) == ["decode", "preprocess", "model", "rescore", "linking", "outputs"]


@pytest.mark.req("SRS-RT-007")
def test_no_clock_records_nothing() -> None:
    with NO_CLOCK.stage(Stage.MODEL):
        time.sleep(0.005)
    assert NO_CLOCK.total() == 0.0
