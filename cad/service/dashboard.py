"""The site dashboard of `cad serve`: server-rendered pages for the people who look after the CAD.

What a site's QA and PACS staff need at a glance, without curl: health and readiness, the queue,
recent studies with their overlays, failures with a requeue button, alerts with acknowledgement,
the output-drift charts, input drift per acquisition device, performance against outcomes, the
audit chain's state and the locked model's identity. Everything is served by the service itself
(templates and one stylesheet in the package: no CDN, no script), so it works on an isolated
hospital network and under a strict Content-Security-Policy.

Sign-in: the person gives the API token and their name; the service answers with a random
session cookie (HttpOnly, SameSite=Strict, Secure under HTTPS), never the token itself. The name
is who acknowledgements and requeues are audited as. Every form carries the session's CSRF token.
Sessions live in the process (a restart signs everyone out) and end after :data:`IDLE_SECONDS`
without a request or :data:`MAX_SECONDS` in all.

Pages are rendered with Jinja2 (autoescaping on: a UID or alert message can never become
markup). The charts are inline SVG drawn from the chart arithmetic of :mod:`cad.service.drift`:
a few polylines, written here rather than bringing a plotting library into the device.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

import cad
from cad.io.uids import uid_tail
from cad.result.findings_json import read_result
from cad.result.model import shown_score
from cad.service import alerts, audit, drift, outcomes
from cad.service.queue import PENDING, RUNNING, STATES, Job, JobQueue

log = logging.getLogger(__name__)

PREFIX = "/ui"
COOKIE = "cad_session"
#: a session ends after this long without a request, and after MAX_SECONDS in all
IDLE_SECONDS = 3600.0
MAX_SECONDS = 12 * 3600.0
#: what a page may load: only this service's stylesheet and images; no script at all
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: a form body larger than this is refused (a name and a note are a few hundred bytes)
MAX_FORM_BYTES = 16_384
#: studies listed per page
RECENT = 100


@dataclass
class Session:
    """A signed-in person: who they said they are, and their CSRF token."""

    user: str
    csrf: str
    started: float
    seen: float


@dataclass
class Sessions:
    """The signed-in sessions of this process, by cookie value."""

    idle_seconds: float = IDLE_SECONDS
    max_seconds: float = MAX_SECONDS
    _by_id: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, user: str) -> str:
        now = time.time()
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._by_id[sid] = Session(user, secrets.token_urlsafe(24), now, now)
        return sid

    def get(self, sid: str | None) -> Session | None:
        """The live session of a cookie value (expired ones are forgotten)."""
        if not sid:
            return None
        now = time.time()
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None
            if now - session.seen > self.idle_seconds or now - session.started > self.max_seconds:
                del self._by_id[sid]
                return None
            session.seen = now
            return session

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def _when(seconds: float | None) -> str:
    """A UTC time as the pages show it."""
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- charts --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChartView:
    """One output fact's EWMA chart, scaled into an SVG viewport (numbers only: safe to inline)."""

    fact: str
    studies: int
    baseline_needed: int
    width: int = 560
    height: int = 180
    ewma: str = ""
    means: tuple[tuple[float, float], ...] = ()
    upper: str = ""
    lower: str = ""
    centre: float | None = None
    y_labels: tuple[tuple[float, str], ...] = ()
    x_labels: tuple[tuple[float, str], ...] = ()
    out_of_control: bool = False
    latest: str = ""
    from_model: bool = False


def _ticks(low: float, high: float) -> list[float]:
    span = high - low
    return [low + span * k / 4 for k in range(5)]


def chart_view(series: drift.ChartSeries, batch: int = drift.BATCH, width: int = 560, height: int = 180) -> ChartView:
    """``series`` scaled into an SVG viewport: its batch means, their EWMA and its limits (the
    very numbers the output-drift alert judges)."""
    if series.baseline_needed or series.reference is None or not series.means:
        return ChartView(series.fact, series.studies, series.baseline_needed, width, height,
                         centre=series.reference.mean if series.reference else None)
    reference, means, path = series.reference, series.means, series.path
    low = min(min(means), min(p[1] for p in path), reference.mean)
    high = max(max(means), max(p[2] for p in path), reference.mean)
    pad = (high - low) * 0.08 or 1.0
    low, high = low - pad, high + pad
    left, right, top, bottom = 56.0, width - 10.0, 10.0, height - 24.0

    def x(i: int) -> float:
        return left + (right - left) * (i / max(len(means) - 1, 1))

    def y(v: float) -> float:
        return bottom - (bottom - top) * (v - low) / (high - low)

    def line(points: list[float]) -> str:
        return " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(points))

    last = path[-1]
    return ChartView(
        fact=series.fact, studies=series.studies, baseline_needed=0, width=width, height=height,
        ewma=line([p[0] for p in path]), upper=line([p[2] for p in path]), lower=line([p[1] for p in path]),
        means=tuple((round(x(i), 1), round(y(v), 1)) for i, v in enumerate(means)),
        centre=round(y(reference.mean), 1),
        y_labels=tuple((round(y(v), 1), f"{v:.3g}") for v in _ticks(low + pad, high - pad)),
        x_labels=((left, f"{batch}"), (right, f"{len(means) * batch}")),
        out_of_control=not last[1] <= last[0] <= last[2],
        latest=f"EWMA {last[0]:.3g}, limits {last[1]:.3g} to {last[2]:.3g}",
        from_model=series.from_model,
    )


# -- the pages -----------------------------------------------------------------------------------

def _templates() -> Environment:
    env = Environment(loader=PackageLoader("cad.service", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["uid_tail"] = uid_tail
    env.filters["score"] = shown_score  # scores and the threshold as every other output shows them
    return env


def _marks(connection: Any, jobs: list[Job]) -> dict[int, int]:
    if not jobs:
        return {}
    marks = f"SELECT job_id, facts FROM study_facts WHERE job_id IN ({','.join('?' * len(jobs))})"
    return {r["job_id"]: int(json.loads(r["facts"])["marks"]) for r in connection.execute(marks, [j.id for j in jobs])}


def overlay_files(job: Job) -> list[Path]:
    """The overlay PNGs written for a job's result (none when the service keeps none)."""
    folder = (job.outputs or {}).get("folder")
    overlays = Path(folder) / "overlays" if folder else None
    if overlays is None or not overlays.is_dir():
        return []
    return sorted(p for p in overlays.iterdir() if p.suffix == ".png" and p.is_file())


def mount(app: FastAPI, queue: Callable[[], Iterator[JobQueue]], token: str, readiness: Callable[[], dict[str, bool]],
          identity: dict[str, Any] | None, monitor: alerts.AlertMonitor,
          secure_cookies: bool = False, sessions: Sessions | None = None) -> Sessions:
    """Add the dashboard's routes under :data:`PREFIX` to ``app``; its sessions are returned.
    ``queue`` is the API's dependency giving each request its own connection to the state.

    ``monitor`` gives the monitoring settings, the model's reference and the latest verification
    of the audit chain (verified when the overview is opened if the monitor has none yet).
    """
    env = _templates()
    sessions = sessions or Sessions()
    expected = token.encode()
    css = files("cad.service").joinpath("static/dashboard.css").read_bytes()

    def page(name: str, request: Request, session: Session | None, code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            prefix=PREFIX, session=session, version=cad.__version__, identity=identity or {},
            now=time.time(), path=request.url.path, **context)
        return HTMLResponse(html, status_code=code, headers=SECURITY_HEADERS)

    def signed_in(request: Request) -> Session:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            # a browser is sent to the sign-in page; the 303 is never a page with data
            raise HTTPException(status.HTTP_303_SEE_OTHER, "sign in first", headers={"Location": f"{PREFIX}/login"})
        return session

    async def form(request: Request, session: Session | None) -> dict[str, str]:
        """The form's fields; 403 when the session's CSRF token is missing or wrong."""
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "form too large")
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        if session is not None and not hmac.compare_digest(fields.get("csrf", "").encode(), session.csrf.encode()):
            log.warning("dashboard: refused a form without its session's CSRF token (%s)", request.url.path)
            raise HTTPException(status.HTTP_403_FORBIDDEN, "the form is stale or not from this dashboard; reload it")
        return fields

    def back(to: str, message: str = "") -> RedirectResponse:
        target = PREFIX + to + (("&" if "?" in to else "?") + "done=" + message if message else "")
        return RedirectResponse(target, status.HTTP_303_SEE_OTHER, headers=SECURITY_HEADERS)

    @app.get(PREFIX + "/static/dashboard.css", include_in_schema=False)
    def stylesheet() -> Response:
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600",
                                                             "X-Content-Type-Options": "nosniff"})

    @app.get(PREFIX + "/login", include_in_schema=False)
    def login_page(request: Request) -> HTMLResponse:
        return page("login.html", request, None)

    @app.post(PREFIX + "/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        fields = await form(request, None)
        user = fields.get("user", "").strip()[:80]
        given = fields.get("token", "").strip().encode()
        if not hmac.compare_digest(given, expected) or not user:
            log.warning("dashboard: refused a sign-in (%s)", "wrong token" if user else "no name given")
            return page("login.html", request, None, status.HTTP_401_UNAUTHORIZED,
                        error="The token is wrong or your name is missing.", user=user)
        response = back("/")
        response.set_cookie(COOKIE, sessions.start(user), httponly=True, samesite="strict", secure=secure_cookies,
                            path=PREFIX, max_age=int(MAX_SECONDS))
        log.info("dashboard: %s signed in", user)
        return response

    @app.post(PREFIX + "/logout", include_in_schema=False)
    async def logout(request: Request, session: Session = Depends(signed_in)) -> Response:
        await form(request, session)
        sessions.end(request.cookies.get(COOKIE))
        response = back("/login")
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    @app.get(PREFIX, include_in_schema=False)
    @app.get(PREFIX + "/", include_in_schema=False)
    def overview(request: Request, session: Session = Depends(signed_in), q: JobQueue = Depends(queue)) -> Response:
        checks = readiness()
        oldest = q.oldest_pending()
        chain = monitor.audit_status
        if chain is None:
            verified = audit.verify(q.db)
            chain = {"intact": verified.intact, "records": verified.records, "problems": list(verified.problems),
                     "checked": time.time()}
        recent = q.jobs(limit=10, newest_first=True)
        records_now = q.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        return page("overview.html", request, session, checks=checks, ready=all(checks.values()),
                    records_now=records_now, audit_every=monitor.settings.alerts.audit_every_seconds,
                    counts=q.counts(), oldest_waiting=(time.time() - oldest) if oldest is not None else None, chain=chain,
                    open_alerts=alerts.alerts(q.db, alerts.OPEN, 20), recent=recent, marks=_marks(q.db, recent))

    @app.get(PREFIX + "/studies", include_in_schema=False)
    def studies(request: Request, state_filter: str | None = None, done: str = "",
                session: Session = Depends(signed_in), q: JobQueue = Depends(queue)) -> Response:
        chosen = state_filter if state_filter in STATES else None
        jobs = q.jobs(state=chosen, limit=RECENT, newest_first=True)
        return page("studies.html", request, session, jobs=jobs, marks=_marks(q.db, jobs), counts=q.counts(),
                    chosen=chosen, states=STATES, done=done, overlays={j.id: len(overlay_files(j)) for j in jobs})

    @app.get(PREFIX + "/jobs/{job_id}", include_in_schema=False)
    def job_page(job_id: int, request: Request, done: str = "", session: Session = Depends(signed_in),
                 q: JobQueue = Depends(queue)) -> Response:
        job = q.get(job_id)
        if job is None:
            return page("missing.html", request, session, status.HTTP_404_NOT_FOUND, what=f"job {job_id}")
        findings: dict[str, Any] | None = None
        mark_ids: list[str] = []
        folder = (job.outputs or {}).get("folder")
        if folder and (Path(folder) / "findings.json").is_file():
            try:
                findings = json.loads((Path(folder) / "findings.json").read_text())
                # which findings are CAD marks is the result contract's rule, not the page's
                mark_ids = [f.finding_id for f in read_result(Path(folder) / "findings.json").marks]
            except (OSError, ValueError):
                findings = None
        return page("job.html", request, session, job=job, findings=findings, mark_ids=mark_ids, done=done,
                    overlays=[p.name for p in overlay_files(job)], history=q.jobs(study_uid=job.study_uid))

    @app.get(PREFIX + "/jobs/{job_id}/overlays/{name}", include_in_schema=False)
    def overlay(job_id: int, name: str, session: Session = Depends(signed_in),
                q: JobQueue = Depends(queue)) -> Response:
        job = q.get(job_id)
        found = {p.name: p for p in overlay_files(job)} if job else {}
        if name not in found:  # only a file the job wrote: never a path from the request
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such overlay")
        return FileResponse(found[name], media_type="image/png", headers={**SECURITY_HEADERS})

    @app.post(PREFIX + "/jobs/{job_id}/requeue", include_in_schema=False)
    async def requeue(job_id: int, request: Request, session: Session = Depends(signed_in),
                      q: JobQueue = Depends(queue)) -> Response:
        await form(request, session)
        job = q.get(job_id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such job")
        if job.state in (PENDING, RUNNING):
            return back(f"/jobs/{job_id}", "already in the queue")
        q.requeue(job_id, f"dashboard: {session.user}")
        log.info("dashboard: job %d (study %s) requeued by a signed-in user", job_id, uid_tail(job.study_uid))
        return back(f"/jobs/{job_id}", "requeued")

    @app.get(PREFIX + "/alerts", include_in_schema=False)
    def alerts_page(request: Request, state_filter: str | None = None, done: str = "",
                    session: Session = Depends(signed_in), q: JobQueue = Depends(queue)) -> Response:
        chosen = state_filter if state_filter in alerts.ALERT_STATES else None
        return page("alerts.html", request, session, alerts=alerts.alerts(q.db, chosen, 200), chosen=chosen,
                    states=alerts.ALERT_STATES, done=done)

    @app.post(PREFIX + "/alerts/{alert_id}/acknowledge", include_in_schema=False)
    async def acknowledge(alert_id: int, request: Request, session: Session = Depends(signed_in),
                          q: JobQueue = Depends(queue)) -> Response:
        fields = await form(request, session)
        note = fields.get("note", "").strip()[:1000]
        if not note:
            return back("/alerts", "an acknowledgement needs a note")
        if alerts.acknowledge(q.db, alert_id, session.user, note) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such alert")
        return back("/alerts", f"alert {alert_id} acknowledged")

    @app.get(PREFIX + "/monitoring", include_in_schema=False)
    def monitoring(request: Request, window_days: float | None = None, session: Session = Depends(signed_in),
                   q: JobQueue = Depends(queue)) -> Response:
        settings = monitor.settings
        charts = [chart_view(s, settings.output_drift.batch_studies) for s in monitor.output_charts(q.db)]
        return page("monitoring.html", request, session, charts=charts,
                    settings=settings, reference=monitor.reference, devices=monitor.input_summary(q.db),
                    performance=outcomes.performance(q.db, window_days or settings.performance.window_days))

    return sessions


__all__ = ["COOKIE", "PREFIX", "ChartView", "Sessions", "chart_view", "mount", "overlay_files"]
