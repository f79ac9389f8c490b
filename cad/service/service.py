"""The `cad serve` process: sources, queue, worker, API and the loop that ties them together.

One process owns a state folder. At start it locks the folder, puts back jobs a killed
predecessor left running, verifies the locked model and opens the runtime, then loops: poll
the sources when due, run the next due job, sleep. ``once`` ends the loop when nothing is
pending, running, waiting for a retry or still arriving. SIGTERM and SIGINT finish the job in
hand and stop.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cad
from cad.detect.locked import LockedModel, sha256_file
from cad.detect.manifest import WEIGHTS_FILE
from cad.detect.release import is_released
from cad.detect.runtime import Runtime
from cad.errors import EnvironmentProblem, UsageError
from cad.io.dicomweb import PacsError, read_authorization
from cad.service import store
from cad.service.alerts import AlertMonitor, Webhook
from cad.service.metrics import ServiceMetrics
from cad.service.queue import JobQueue, RetryPolicy
from cad.service.reference import load_reference
from cad.service.settings import MonitoringSettings, load_settings
from cad.service.sources import DicomWebPacs, StoreScp, StoreScu, WatchFolder
from cad.service.worker import Source, Worker

log = logging.getLogger(__name__)
#: API addresses that do not need HTTPS (not reachable from the network)
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def parse_address(value: str, option: str) -> tuple[str, int]:
    """``NAME:PORT`` (host or AE title, then port); ValueError otherwise."""
    name, _, port = value.rpartition(":")
    if not name or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{option} {value}: use NAME:PORT")
    return name, int(port)


@dataclass
class ServiceConfig:
    state: Path
    dicomweb: str | None = None
    since: str | None = None
    watch: Path | None = None
    scp: tuple[str, int] | None = None
    send: str | None = None
    api: tuple[str, int] | None = None
    token: str | None = None
    #: calling AE titles the C-STORE SCP accepts (empty: any)
    scp_allow: tuple[str, ...] = ()
    #: Authorization header value for the DICOMweb PACS ("Bearer ..." or "Basic ...")
    dicomweb_auth: str | None = None
    #: certificate and key for HTTPS on the API (required unless it listens on loopback only)
    tls: tuple[Path, Path] | None = None
    poll_seconds: float = 30.0
    quiet_seconds: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: monitoring and alert thresholds (--monitoring FILE, with --late-after and --sensitivity-floor applied)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    #: URL each new alert is POSTed to (None: alerts go to the log, the API and /metrics only)
    alert_webhook: str | None = None
    #: seconds between two rounds of alert checks
    alert_seconds: float = 5.0
    #: keep overlay PNGs with each result (the dashboard shows them; about 1 MB per study)
    overlays: bool = True

    def __post_init__(self) -> None:
        if not (self.dicomweb or self.watch or self.scp):
            raise UsageError("nothing to serve: give --dicomweb URL, --watch DIR or --scp AET:PORT")
        if self.api and not self.token:
            raise UsageError("the HTTP API needs a token (--token-file); it never runs unauthenticated")
        if self.api and self.api[0] not in LOOPBACK and self.tls is None:
            raise UsageError(f"--api {self.api[0]}: an API reachable from the network needs HTTPS "
                             "(--tls-cert and --tls-key); without them it may only listen on 127.0.0.1")

    @classmethod
    def from_options(
        cls, state: Path, *, dicomweb: str | None = None, since: str | None = None, watch: Path | None = None,
        scp: str | None = None, scp_allow: str | None = None, dicomweb_auth_file: Path | None = None,
        tls_cert: Path | None = None, tls_key: Path | None = None, send: str | None = None, api: str | None = None,
        token_file: Path | None = None, poll_seconds: float = 30.0, quiet_seconds: float = 10.0,
        retry: RetryPolicy | None = None, late_seconds: float | None = None, alert_webhook: str | None = None,
        sensitivity_floor: float | None = None, overlays: bool = True, monitoring: Path | None = None,
    ) -> ServiceConfig:
        """The configuration from `cad serve`'s options as typed; ValueError (one line naming the
        option or file) for anything inconsistent, unreadable or missing."""
        if since is not None and not (len(since) == 8 and since.isdigit()):
            raise UsageError(f"--since {since}: use YYYYMMDD")
        for path in (watch, tls_cert, tls_key, dicomweb_auth_file):
            if path is not None and not path.exists():
                raise UsageError(f"{path}: no such file or folder")
        if watch is not None and not watch.is_dir():
            raise UsageError(f"--watch {watch}: not a folder")
        if api and token_file is None:
            raise UsageError("--api needs --token-file: the API never runs without authentication")
        if (tls_cert is None) != (tls_key is None):
            raise UsageError("--tls-cert and --tls-key go together")
        if sensitivity_floor is not None and not 0 < sensitivity_floor < 1:
            raise UsageError(f"--sensitivity-floor {sensitivity_floor}: use a fraction between 0 and 1")
        settings = load_settings(monitoring).with_overrides(late_seconds, sensitivity_floor)
        if alert_webhook is not None and not alert_webhook.startswith(("http://", "https://")):
            raise UsageError(f"--alert-webhook {alert_webhook}: use an http:// or https:// URL")
        from cad.service.api import read_token

        return cls(
            state=state, dicomweb=dicomweb, since=since, watch=watch,
            scp=parse_address(scp, "--scp") if scp else None, send=send,
            api=parse_address(api, "--api") if api else None,
            token=read_token(token_file) if api and token_file is not None else None,
            poll_seconds=poll_seconds, quiet_seconds=quiet_seconds, retry=retry or RetryPolicy(),
            scp_allow=tuple(a.strip() for a in (scp_allow or "").split(",") if a.strip()),
            dicomweb_auth=read_authorization(dicomweb_auth_file) if dicomweb_auth_file else None,
            tls=(tls_cert, tls_key) if tls_cert and tls_key else None,
            monitoring=settings, alert_webhook=alert_webhook, overlays=overlays,
        )

    def describe(self) -> dict[str, Any]:
        return {"dicomweb": self.dicomweb, "watch": str(self.watch) if self.watch else None,
                "scp": f"{self.scp[0]}:{self.scp[1]}" if self.scp else None, "send": self.send,
                "api": f"{self.api[0]}:{self.api[1]}" if self.api else None}


class ListenerError(EnvironmentProblem):
    """A port the service was told to listen on cannot be opened (in use, not permitted): the
    service stops rather than run without it."""


def listening_socket(host: str, port: int, option: str) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening; ListenerError naming ``option`` otherwise."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ListenerError(f"{option} {host}:{port}: cannot listen: {(exc.strerror or str(exc)).lower()}") from None
    return sock


class Service:
    """A configured service, ready to :meth:`run`."""

    def __init__(self, config: ServiceConfig, model: LockedModel, runtime: Runtime) -> None:
        self.config = config
        self.model = model
        #: the validation reference beside the model, verified against its manifest (None: it ships
        #: none); ModelIntegrityError before anything else when it does not verify
        self.reference = load_reference(model)
        self._lock = store.lock_state(config.state)
        self.queue = JobQueue(store.connect(config.state), config.retry)
        self.sources: dict[str, Source] = {}
        self.pacs: DicomWebPacs | None = None
        results_in: dict[str, Any] = {}
        if config.dicomweb:
            headers = {"Authorization": config.dicomweb_auth} if config.dicomweb_auth else None
            self.pacs = DicomWebPacs(config.dicomweb, config.since, headers=headers)
            self.sources[self.pacs.name] = self.pacs
        if config.watch:
            watch = WatchFolder(config.watch, config.quiet_seconds)
            self.sources[watch.name] = watch
            results_in[watch.name] = watch.results_folder
        self.scp: StoreScp | None = None
        if config.scp:
            self.scp = StoreScp(config.state, config.scp[0], config.scp[1], quiet_seconds=config.quiet_seconds,
                                allowed=config.scp_allow)
            self.sources[self.scp.name] = self.scp
        destination = StoreScu(config.send) if config.send else self.pacs
        self.metrics = ServiceMetrics(config.state)
        self.worker = Worker(model, runtime, self.queue, config.state, self.sources, destination, results_in,
                             overlays=config.overlays, metrics=self.metrics)
        self.monitor = AlertMonitor(config.monitoring, Webhook(config.alert_webhook) if config.alert_webhook else None,
                                    self.reference)
        self._stop = threading.Event()
        self._verified_key: tuple[int, int] | None = None
        self._verified = False
        self._api_server: Any = None
        self.last_poll_ok: dict[str, bool] = {}

    # -- readiness and submission (used by the API, from its own threads) --------------------

    def _model_verified(self) -> bool:
        """Whether the installed weights file still hashes to the locked model the service runs:
        re-hashed whenever the file's size or modification time changes (a concurrent probe at
        worst hashes twice)."""
        path = self.model.path / WEIGHTS_FILE
        try:
            stat = path.stat()
        except OSError:
            return False
        key = (stat.st_mtime_ns, stat.st_size)
        if key != self._verified_key:
            self._verified = sha256_file(path) == self.model.sha256
            self._verified_key = key
        return self._verified

    def readiness(self) -> dict[str, bool]:
        checks = {"model_verified": self._model_verified(), "database": True, "running": not self._stop.is_set(),
                  "outputs_writable": self.worker.storage_problem is None}
        try:
            with closing(store.connect(self.config.state)) as connection:
                JobQueue(connection).counts()
        except Exception:  # noqa: BLE001 - any failure to read the state means not ready
            checks["database"] = False
        for name, ok in self.last_poll_ok.items():
            checks[f"source_{name}"] = ok
        return checks

    def submit(self, study_uid: str) -> dict[str, Any]:
        assert self.pacs is not None
        # an API thread: its own client and connection (neither is shared across threads)
        pacs = DicomWebPacs(self.pacs.url, None, headers=self.pacs.headers)
        instances = pacs.mg_instances(study_uid)
        if not instances:
            raise LookupError(study_uid)
        with closing(store.connect(self.config.state)) as connection:
            job, new = JobQueue(connection).enqueue(study_uid, instances, pacs.name)
        return {**job.public(), "new": new}

    # -- the loop -----------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def _start_api(self) -> None:
        import uvicorn

        assert self.config.api and self.config.token
        from cad.service.api import create_app

        app = create_app(self.config.state, self.config.token, self.readiness,
                         self.submit if self.pacs else None, self.metrics, self.identity(), self.monitor,
                         secure_cookies=self.config.tls is not None)
        host, port = self.config.api
        tls: dict[str, Any] = ({"ssl_certfile": str(self.config.tls[0]), "ssl_keyfile": str(self.config.tls[1])}
                               if self.config.tls else {})
        # bound here, in the caller's thread, so that a port that cannot be opened stops the
        # service (uvicorn binding in its own thread would only log it and leave no API)
        sock = listening_socket(host, port, "--api")
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                               **tls))
        # older uvicorn's Server method; current uvicorn has no such attribute (it installs no
        # signal handlers off the main thread), so its type hints do not know it
        server.install_signal_handlers = lambda: None  # type: ignore[attr-defined]
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="cad-api", daemon=True).start()
        self._api_server = server

    def _poll(self) -> None:
        for name, source in self.sources.items():
            try:
                source.poll(self.queue)
                self.last_poll_ok[name] = True
            except PacsError as exc:
                self.last_poll_ok[name] = False
                log.warning("%s: %s", name, exc)

    def identity(self) -> dict[str, Any]:
        """What the service is (for alerts, the API and the dashboard): version, model, runtime."""
        variant = getattr(self.worker.runtime, "variant", None)
        return {"version": cad.__version__, "model": self.model.name, "model_sha256": self.model.sha256,
                "settings_sha256": self.model.settings_sha256,
                "released": is_released(self.model.sha256, self.model.settings_sha256),
                "runtime": self.worker.runtime.name,
                "runtime_variant": variant, "state": str(self.config.state),
                "monitoring": self.config.monitoring.public(),
                "monitoring_reference": self.reference.public() if self.reference else None}

    def _check_alerts(self) -> None:
        """One round of RC-029 checks; a defect here is logged, never stops the service."""
        try:
            for alert in self.monitor.check(self.queue, self.readiness(), self.identity()):
                self.metrics.alert_raised(alert.kind)
        except Exception:
            log.error("alert checks failed (internal error); the traceback follows", exc_info=True)

    def _settling(self) -> bool:
        """Whether a pushed or dropped study is still within its quiet period."""
        return any(getattr(s, "unsettled", 0) for s in self.sources.values())

    def run(self, once: bool = False) -> dict[str, int]:
        """Serve until stopped (or, with ``once``, until everything found is finished)."""
        try:
            # every listener first: one that cannot open its port stops the service before any work
            if self.scp:
                try:
                    self.scp.start()
                except OSError as exc:
                    raise ListenerError(f"--scp {self.scp.ae_title}:{self.scp.port}: cannot listen on port "
                                        f"{self.scp.port}: {(exc.strerror or str(exc)).lower()}") from None
            if self.config.api:
                self._start_api()
            recovered = self.queue.recover()
            if recovered:
                log.warning("%d job(s) left running by a stopped process were put back in the queue", recovered)
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self.stop)
                signal.signal(signal.SIGINT, self.stop)
            log.info("serving %s", {k: v for k, v in self.config.describe().items() if v})
            next_poll = next_check = 0.0
            while not self._stop.is_set():
                now = time.time()
                if now >= next_poll:
                    self._poll()
                    next_poll = now + (min(self.config.poll_seconds, 1.0) if once else self.config.poll_seconds)
                if now >= next_check:
                    self._check_alerts()
                    next_check = now + self.config.alert_seconds
                job = self.queue.claim()
                if job is not None:
                    self.worker.process(job)
                    self._check_alerts()  # a failed study or a drift is alerted as soon as it is known
                    next_check = time.time() + self.config.alert_seconds
                    if once and self.worker.storage_problem:  # kept for the next run; it cannot finish now
                        break
                    continue
                if once and self.queue.idle() and not self._settling():
                    self._check_alerts()  # the last word on what failed
                    break
                self._stop.wait(max(0.05, min(next_poll - time.time(), 1.0)))
        finally:
            if self.scp:
                self.scp.stop()
            if self._api_server is not None:
                self._api_server.should_exit = True
        return self.queue.counts()

    def close(self) -> None:
        self._lock.close()
