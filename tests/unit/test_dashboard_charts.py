"""The dashboard's chart scaling and its sessions (SRS-SVC-017); the pages themselves are tested
in a real browser (tests/system/test_dashboard.py)."""

from __future__ import annotations

import pytest

from cad.service import drift
from cad.service.dashboard import ChartView, Sessions, chart_view
from cad.service.settings import OutputDriftSettings

SETTINGS = OutputDriftSettings(baseline_studies=100, batch_studies=10)


def _facts(marks: list[float]) -> list[drift.OutputFacts]:
    return [drift.OutputFacts(marks=m, any_mark=float(m > 0), max_score=0.5, linked_fraction=0.0,
                              not_analysed_fraction=0.0, seconds=1.0) for m in marks]


def _marks_chart(history: list[drift.OutputFacts]) -> ChartView:
    (marks,) = [s for s in drift.series(history, SETTINGS) if s.fact == "marks"]
    return chart_view(marks, SETTINGS.batch_studies)


def _points(line: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",") for p in line.split())]


@pytest.mark.req("SRS-SVC-017")
def test_chart_waits_for_its_baseline() -> None:
    view = _marks_chart(_facts([1.0] * 30))
    assert view.baseline_needed == 70 and view.studies == 30 and not view.ewma


@pytest.mark.req("SRS-SVC-017")
def test_chart_draws_the_alerting_arithmetic_inside_its_viewport() -> None:
    baseline = [float(k % 3) for k in range(100)]  # mean 0.99, varies
    shifted = [3.0] * 60  # far above: the chart must leave its limits, as the alert does
    history = _facts(baseline + shifted)
    view = _marks_chart(history)
    assert isinstance(view, ChartView) and view.studies == 60
    ewma, upper, lower = _points(view.ewma), _points(view.upper), _points(view.lower)
    assert len(ewma) == len(upper) == len(lower) == len(view.means) == 6
    for x, y in ewma + upper + lower:
        assert 56 <= x <= view.width - 10 and 10 <= y <= view.height - 24
    # SVG y grows downwards: the shifted EWMA is drawn above (smaller y) its upper limit at the end
    assert ewma[-1][1] < upper[-1][1] and view.out_of_control
    expected = drift.chart_states(history, baseline=100, batch=10)[0]
    assert expected.fact == "marks" and expected.out_of_control == view.out_of_control
    assert f"{expected.ewma:.3g}" in view.latest
    # the centre line lies between the limits
    assert view.centre is not None and upper[0][1] < view.centre < lower[0][1]


@pytest.mark.req("SRS-SVC-017")
def test_unchanged_stream_stays_within_the_drawn_limits() -> None:
    values = [float(k % 3) for k in range(200)]
    view = _marks_chart(_facts(values))
    ewma, upper, lower = _points(view.ewma), _points(view.upper), _points(view.lower)
    assert all(u[1] <= e[1] <= lo[1] for e, u, lo in zip(ewma, upper, lower, strict=True))
    assert not view.out_of_control


@pytest.mark.req("SRS-SVC-017")
def test_sessions_end_when_idle_too_long_or_signed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("cad.service.dashboard.time.time", lambda: clock[0])
    sessions = Sessions(idle_seconds=60, max_seconds=300)
    sid = sessions.start("qa")
    other = sessions.start("qa")
    assert sid != other and len(sid) >= 40
    session = sessions.get(sid)
    assert session is not None and session.user == "qa" and len(session.csrf) >= 30
    clock[0] += 59
    assert sessions.get(sid) is not None  # seen: the idle clock restarts
    clock[0] += 61
    assert sessions.get(other) is None  # 120 s idle
    for _ in range(5):  # kept busy, it still ends at the maximum age
        clock[0] += 50
        sessions.get(sid)
    assert sessions.get(sid) is None
    third = sessions.start("qa")
    sessions.end(third)
    assert sessions.get(third) is None and sessions.get(None) is None and sessions.get("made-up") is None
