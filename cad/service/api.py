"""HTTP API of `cad serve` (FastAPI, served by uvicorn): health, readiness, study status,
requeue, manual submission, alerts and their acknowledgement, Prometheus metrics, and the site
dashboard under /ui (cad.service.dashboard; signed in with the same token).

Every route except ``/health`` and ``/ready`` needs ``Authorization: Bearer <token>``; a missing
or wrong token gets 401 and is logged without the token. The two probes are open because
orchestrators call them without credentials; they say nothing about patients. Responses carry
UIDs and states, never patient names or IDs.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParameter
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

import cad
from cad.errors import UsageError
from cad.io.dicomweb import PacsError
from cad.io.uids import is_valid_uid
from cad.service import alerts, audit, dashboard, drift, outcomes, store
from cad.service.metrics import CONTENT_TYPE, ServiceMetrics
from cad.service.queue import STATES, JobQueue

log = logging.getLogger(__name__)


def read_token(path: Path) -> str:
    """The API token from a file (first line); refuses an empty or short token."""
    try:
        lines = path.read_text().strip().splitlines()
    except OSError as exc:
        raise UsageError(f"{path}: token file cannot be read ({exc.strerror})") from None
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise UsageError(f"{path}: the API token must be at least 16 characters")
    return token


#: the largest integer SQLite stores: identifiers above it cannot name a row
SQLITE_MAX = 2**63 - 1
#: how many rows a listing returns at most
Limit = Annotated[int, Query(ge=1, le=10_000)]
#: the error answers of the API, as its OpenAPI document states them
ERROR_ANSWERS = {
    400: "the request names an unknown state or an invalid UID, or its body or file cannot be read",
    401: "no valid bearer token",
    404: "no such study or alert",
    409: "no DICOMweb PACS is configured",
    413: "the uploaded file is too large",
    502: "the PACS could not be reached",
}

#: POST /outcomes takes the outcomes CSV itself as the body (docs/service.md), stated so that
#: clients and schemathesis send one
OUTCOMES_BODY: dict[str, Any] = {"requestBody": {"required": True, "description": (
    "the outcomes CSV (UTF-8): a header naming StudyInstanceUID, assessment, recall and optionally "
    "pathology, laterality, location; one row per study"), "content": {"text/csv": {"schema": {
        "type": "string", "maxLength": outcomes.MAX_BYTES, "example": (
            "StudyInstanceUID,assessment,recall,pathology\n1.2.826.0.1.3680043.2.1125.1,4,yes,malignant\n")}}}}}

#: what GET /ready answers, ready or not
READINESS: dict[str, Any] = {"type": "object", "required": ["ready", "checks"], "properties": {
    "ready": {"type": "boolean"}, "checks": {"type": "object", "additionalProperties": {"type": "boolean"}}}}


class Acknowledgement(BaseModel):
    """Who acknowledges an alert and what they did about it (both go to the audit log)."""

    by: str = Field(min_length=1, max_length=80, description="the person acknowledging (name or staff ID)")
    note: str = Field(min_length=1, max_length=1000, description="what was done or decided")


def create_app(state: Path, token: str, readiness: Callable[[], dict[str, bool]],
               submit: Callable[[str], dict[str, Any]] | None = None, metrics: ServiceMetrics | None = None,
               identity: dict[str, Any] | None = None, monitor: alerts.AlertMonitor | None = None,
               secure_cookies: bool = False) -> FastAPI:
    """The API over the service's state folder.

    ``readiness`` returns named checks (model verified, database, PACS reachable...);
    ``submit`` enqueues a study by UID from the configured PACS (None: not available);
    ``metrics`` serves /metrics (None: a registry of the database gauges only); ``identity``
    names the service, model and runtime (/about and the dashboard); ``monitor`` holds the
    monitoring settings, the model's reference and the latest audit-chain verification (None:
    the defaults, no reference); ``secure_cookies`` marks the dashboard's session cookie Secure
    (the API is served over HTTPS).
    """
    metrics = metrics or ServiceMetrics(state)
    monitor = monitor or alerts.AlertMonitor()
    app = FastAPI(title="mammo-cad service", version=cad.__version__, docs_url=None, redoc_url=None)
    expected = token.encode()

    def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
        """The error answers a route gives, for its OpenAPI entry (401 on every protected route)."""
        return {code: {"description": ERROR_ANSWERS[code]} for code in (401, *codes)}

    def authorised(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            log.warning("API: refused an unauthenticated %s %s", request.method, request.url.path)
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        return "api-token"

    def queue() -> Iterator[JobQueue]:
        connection = store.connect(state)
        try:
            yield JobQueue(connection)
        finally:
            connection.close()

    dashboard.mount(app, queue, token, readiness, identity, monitor, secure_cookies)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(dashboard.PREFIX + "/", status.HTTP_303_SEE_OTHER)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": cad.__version__}

    @app.get("/ready", responses={
        200: {"description": "every readiness check passes", "content": {"application/json": {"schema": READINESS}}},
        503: {"description": "a readiness check fails (named in checks)",
              "content": {"application/json": {"schema": READINESS}}}})
    def ready() -> JSONResponse:
        checks = readiness()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/studies", responses=documented(400))
    def studies(state_filter: str | None = None, limit: Limit = 200, _: str = Depends(authorised),
                q: JobQueue = Depends(queue)) -> dict[str, Any]:
        if state_filter is not None and state_filter not in STATES:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"state must be one of {', '.join(STATES)}")
        return {"counts": q.counts(), "jobs": [j.public() for j in q.jobs(state=state_filter, limit=limit)]}

    @app.get("/studies/{study_uid}", responses=documented(404))
    def study(study_uid: str, _: str = Depends(authorised), q: JobQueue = Depends(queue)) -> dict[str, Any]:
        jobs = q.jobs(study_uid=study_uid)
        if not jobs:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no job for this study")
        current = [j for j in jobs if j.state != "superseded"]
        return {"study_instance_uid": study_uid, "state": (current or jobs)[-1].state,
                "jobs": [j.public() for j in jobs]}

    @app.post("/studies/{study_uid}/requeue", status_code=status.HTTP_202_ACCEPTED, responses=documented(404))
    def requeue(study_uid: str, who: str = Depends(authorised), q: JobQueue = Depends(queue)) -> dict[str, Any]:
        jobs = [j for j in q.jobs(study_uid=study_uid) if j.state != "superseded"]
        if not jobs:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no job for this study")
        return q.requeue(jobs[-1].id, who).public()

    @app.post("/studies/{study_uid}", status_code=status.HTTP_202_ACCEPTED,
              responses=documented(400, 404, 409, 502))
    def submit_study(study_uid: str, _: str = Depends(authorised)) -> dict[str, Any]:
        if not is_valid_uid(study_uid):  # it goes into a PACS query: refused here, never sent
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "not a valid DICOM UID")
        if submit is None:
            raise HTTPException(status.HTTP_409_CONFLICT, "no DICOMweb PACS is configured to fetch the study from")
        try:
            return submit(study_uid)
        except LookupError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "the PACS has no MG images for this study") from None
        except PacsError as exc:  # the PACS, not this request, failed
            raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None

    @app.get("/about", responses=documented())
    def about(_: str = Depends(authorised)) -> dict[str, Any]:
        return {"version": cad.__version__, **(identity or {})}

    @app.get("/alerts", responses=documented(400))
    def list_alerts(state_filter: str | None = None, limit: Limit = 200, _: str = Depends(authorised),
                    q: JobQueue = Depends(queue)) -> dict[str, Any]:
        try:
            found = alerts.alerts(q.db, state_filter, limit)
        except ValueError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        return {"open": sum(alerts.open_counts(q.db).values()), "alerts": [a.public() for a in found]}

    @app.post("/alerts/{alert_id}/acknowledge", responses=documented(400, 404))
    def acknowledge(alert_id: Annotated[int, PathParameter(ge=1, le=SQLITE_MAX)], body: Acknowledgement,
                    _: str = Depends(authorised), q: JobQueue = Depends(queue)) -> dict[str, Any]:
        alert = alerts.acknowledge(q.db, alert_id, body.by, body.note)
        if alert is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such alert")
        return alert.public()

    @app.get("/drift", responses=documented())
    def output_drift(_: str = Depends(authorised), q: JobQueue = Depends(queue)) -> dict[str, Any]:
        settings = monitor.settings.output_drift
        series = monitor.output_charts(q.db)
        return {"reference": "model" if monitor.output_reference else "site",
                "baseline_studies": settings.baseline_studies, "batch_studies": settings.batch_studies,
                "lambda": settings.ewma_lambda, "width_sd": settings.width_sd,
                "charts": drift.summary([s.state() for s in series]),
                "from_model": sorted(s.fact for s in series if s.from_model)}

    @app.get("/inputs", responses=documented())
    def inputs(_: str = Depends(authorised), q: JobQueue = Depends(queue)) -> dict[str, Any]:
        settings = monitor.settings.input_drift
        return {"reference": "model" if monitor.input_reference else "site",
                "baseline_images": settings.baseline_images, "window_images": settings.window_images,
                "p_value": settings.p_value, "min_ks_distance": settings.min_ks_distance,
                "devices": monitor.input_summary(q.db)}

    @app.get("/performance", responses=documented())
    def performance(window_days: Annotated[float | None, Query(gt=0, le=36_500)] = None, _: str = Depends(authorised),
                    q: JobQueue = Depends(queue)) -> dict[str, Any]:
        return outcomes.performance(q.db, window_days or monitor.settings.performance.window_days)

    @app.post("/outcomes", responses=documented(400, 413), openapi_extra=OUTCOMES_BODY)
    async def import_outcomes(request: Request, _: str = Depends(authorised),
                              q: JobQueue = Depends(queue)) -> dict[str, Any]:
        body = await request.body()
        if len(body) > outcomes.MAX_BYTES:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "outcomes file too large; split it")
        try:
            report = outcomes.import_file(q.db, Path("outcomes.csv"), body.decode("utf-8-sig"))
        except (outcomes.OutcomesError, UnicodeDecodeError) as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc).splitlines()[0]) from None
        return {"imported": report.imported, "refused": list(report.refused),
                "ignored_columns": list(report.ignored_columns)}

    @app.get("/metrics", response_class=Response, responses={
        **documented(), 200: {"description": "Prometheus text exposition", "content": {CONTENT_TYPE: {}}}})
    def prometheus(_: str = Depends(authorised)) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/audit/verify", responses=documented())
    def verify_audit(_: str = Depends(authorised), q: JobQueue = Depends(queue)) -> dict[str, Any]:
        result = audit.verify(q.db)
        return {"intact": result.intact, "records": result.records, "head_sha256": result.head_sha256,
                "problems": list(result.problems)}

    return app
