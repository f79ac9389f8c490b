"""Where batch studies run: processes on this machine (``local``) or actors on a Ray cluster
(``ray``, the ``batch`` extra). Both keep at most one study in flight per worker (backpressure:
the driver discovers and writes the ledger no faster than the workers analyse), load the model
once per worker, and report a study whose worker died or ran past the time limit as failed with
that reason instead of stalling the run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cad.batch.discover import StudyWork
from cad.batch.ledger import Outcome
from cad.batch.work import analyse, start_worker
from cad.errors import UsageError

log = logging.getLogger(__name__)

#: the driver's environment variables that change what a worker does: its network threads and
#: the fixed creation instant of reproducible outputs (a Ray actor does not inherit the driver's
#: environment, a local worker process does)
WORKER_ENVIRONMENT = ("CAD_THREADS", "SOURCE_DATE_EPOCH")


@dataclass(frozen=True)
class EngineConfig:
    model_dir: str | None
    runtime: str
    out: Path
    overlays: bool
    workers: int
    #: a study taking longer than this is stopped and recorded failed
    timeout_s: float = 600.0
    #: a study whose worker died is tried this many times in all
    attempts: int = 2
    #: the DICOMweb root the studies are fetched from (None: local files)
    dicomweb: str | None = None
    #: its Authorization header value (handed to the workers, never logged)
    dicomweb_auth: str | None = field(default=None, repr=False)


class LocalEngine:
    """A pool of worker processes on this machine."""

    name = "local"

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.pool = self._pool()

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.config.workers, initializer=start_worker,
                                   initargs=(self.config.model_dir, self.config.runtime, self.config.dicomweb,
                                             self.config.dicomweb_auth))

    def _restart(self) -> None:
        for process in list(getattr(self.pool, "_processes", {}).values()):
            process.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._pool()

    def run(self, studies: list[StudyWork]) -> Iterator[tuple[Outcome, int]]:
        """Each study's outcome (and the attempts it took), as studies finish."""
        queue = list(reversed(studies))
        tries: dict[str, int] = {}
        running: dict[Future[Outcome], tuple[StudyWork, float]] = {}
        while queue or running:
            while queue and len(running) < self.config.workers:
                work = queue.pop()
                tries[work.study_uid] = tries.get(work.study_uid, 0) + 1
                running[self.pool.submit(analyse, work, self.config.out, self.config.overlays)] = (work, time.monotonic())
            done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                work, _ = running.pop(future)
                try:
                    yield future.result(), tries[work.study_uid]
                except BrokenProcessPool:
                    broken = True
                    if tries[work.study_uid] < self.config.attempts:
                        log.warning("a worker process died; study %s goes back in the queue", work.study_uid[-8:])
                        queue.append(work)
                    else:
                        yield Outcome.failed(work, "worker process died (tried twice)"), tries[work.study_uid]
            late = [(f, w) for f, (w, t) in running.items() if time.monotonic() - t > self.config.timeout_s]
            for future, work in late:
                running.pop(future)
                yield Outcome.failed(work, f"timed out after {self.config.timeout_s:g} s"), tries[work.study_uid]
            if broken or late:  # the other studies in flight go back; the pool starts afresh
                queue.extend(w for w, _ in running.values())
                running.clear()
                self._restart()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayEngine:
    """Actors on a Ray cluster (an existing one at ``address``, or a local instance): one
    actor per worker, each loading the model once; a study whose actor dies goes to a
    restarted actor (tried ``attempts`` times in all), a study past the time limit is
    cancelled and recorded failed. Needs the ``batch`` extra (ray)."""

    name = "ray"

    def __init__(self, config: EngineConfig, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise UsageError("--engine ray needs Ray: pip install 'mammo-cad[batch]'") from None
        self.ray = ray
        self.config = config
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        # a dead actor is restarted (loading the model again) and the study it held is retried
        # on it once by Ray (outputs are written atomically, so a retry never doubles a study);
        # after that the driver gives it one more try, then records it failed
        env_vars = {k: os.environ[k] for k in WORKER_ENVIRONMENT if k in os.environ}
        actor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=1,
                           runtime_env={"env_vars": env_vars})(_Analyst)
        self.actors: list[Any] = [actor.remote(config.model_dir, config.runtime, config.dicomweb, config.dicomweb_auth)
                                  for _ in range(config.workers)]

    def run(self, studies: list[StudyWork]) -> Iterator[tuple[Outcome, int]]:
        ray = self.ray
        queue = list(reversed(studies))
        tries: dict[str, int] = {}
        idle = list(range(len(self.actors)))
        running: dict[object, tuple[StudyWork, int, float]] = {}
        while queue or running:
            while queue and idle:
                work, slot = queue.pop(), idle.pop()
                tries[work.study_uid] = tries.get(work.study_uid, 0) + 1
                ref = self.actors[slot].analyse.remote(work, str(self.config.out), self.config.overlays)
                running[ref] = (work, slot, time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                work, slot, _ = running.pop(ref)
                idle.append(slot)
                try:
                    yield ray.get(ref), tries[work.study_uid]
                except ray.exceptions.RayActorError:
                    if tries[work.study_uid] < self.config.attempts:
                        log.warning("a Ray worker died; study %s goes back in the queue", work.study_uid[-8:])
                        queue.append(work)
                    else:
                        yield Outcome.failed(work, "worker process died (tried twice)"), tries[work.study_uid]
            for ref, (work, slot, began) in list(running.items()):
                if time.monotonic() - began > self.config.timeout_s:
                    running.pop(ref)
                    ray.kill(self.actors[slot], no_restart=False)  # the actor restarts, with the model
                    idle.append(slot)
                    yield Outcome.failed(work, f"timed out after {self.config.timeout_s:g} s"), tries[work.study_uid]

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.ray.shutdown()


class _Analyst:
    """A Ray actor: the verified model loaded once, then study after study."""

    def __init__(self, model_dir: str | None, runtime: str, dicomweb: str | None, dicomweb_auth: str | None) -> None:
        start_worker(model_dir, runtime, dicomweb, dicomweb_auth)

    def analyse(self, work: StudyWork, out: str, overlays: bool) -> Outcome:
        return analyse(work, Path(out), overlays)
