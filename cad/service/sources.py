"""Where studies come from and where results go: a DICOMweb PACS, a DICOM C-STORE peer, a folder.

Each source turns what it sees into (study, MG instance set) candidates for the queue and can
hand over a queued job's files; each destination delivers a job's SR and presentation states.
Errors talking to a PACS are raised as :class:`PacsError`, which the worker retries with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pydicom.dataset import Dataset

from cad.io.codes import MG_FOR_PRESENTATION, MG_FOR_PROCESSING
from cad.io.dicom_reader import SUPPORTED_TRANSFER_SYNTAXES, not_mammogram
from cad.io.dicomweb import DicomWeb, PacsError, RemoteInstance
from cad.io.loader import iter_input_files
from cad.io.uids import is_valid_uid, uid_tail
from cad.service.queue import Instance, Job, JobQueue

log = logging.getLogger(__name__)

#: the folder name under which `cad serve --watch` writes results (never read as input)
WATCH_RESULTS = "cad-results"


class Destination(Protocol):
    """Where a job's DICOM outputs are delivered."""

    name: str

    def deliver(self, paths: list[Path]) -> None: ...


class DicomWebPacs:
    """A PACS over DICOMweb as a service source and destination: polled with QIDO-RS for MG
    studies, fetched with WADO-RS, outputs stored with STOW-RS."""

    name = "dicomweb"

    def __init__(self, url: str, since: str | None = None, timeout: float = 60.0,
                 headers: dict[str, str] | None = None) -> None:
        self.web = DicomWeb(url, timeout, headers)
        self.url, self.headers, self.since = self.web.url, headers, since

    @property
    def reachable(self) -> bool | None:
        return self.web.reachable

    def mg_instances(self, study_uid: str) -> list[Instance]:
        """The study's MG instances as the PACS lists them now (invalid UIDs left out)."""
        return [Instance(i.series_uid, i.sop_uid) for i in self.web.mg_instances(study_uid)]

    def poll(self, queue: JobQueue) -> int:
        """Enqueue MG studies that are new or whose instance count changed; returns jobs added."""
        added = 0
        for study in self.web.mg_studies(self.since):
            if study.instances >= 0 and queue.seen_count(self.name, study.study_uid) == study.instances:
                continue
            instances = self.mg_instances(study.study_uid)
            if instances:
                _, new = queue.enqueue(study.study_uid, instances, self.name)
                if new:
                    added += 1
                    log.info("queued study %s (%d MG images) from DICOMweb", uid_tail(study.study_uid), len(instances))
            queue.mark_seen(self.name, study.study_uid, study.instances)
        return added

    def fetch(self, job: Job, folder: Path) -> list[Path]:
        """WADO-RS every instance of the job into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        return [self.web.retrieve(job.study_uid, RemoteInstance(i.series_uid, i.sop_uid), folder)
                for i in job.instances]

    def deliver(self, paths: list[Path]) -> None:
        """STOW-RS the outputs; a store the PACS reports as failed is an error."""
        self.web.store([pydicom.dcmread(p) for p in paths])


def _header(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True,
                               specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality"])
    except Exception:  # noqa: BLE001 - not DICOM: the loader records it as not analysed when the study runs
        return None


def mg_instances_of(headers: Iterable[Dataset]) -> list[Instance]:
    """The mammograms among file headers, as queue instances (by the rule every driver applies:
    :func:`cad.io.dicom_reader.not_mammogram`)."""
    return [Instance(str(h.get("SeriesInstanceUID", "")), str(h.SOPInstanceUID)) for h in headers
            if not_mammogram(h) is None and h.get("SOPInstanceUID")]


def files_of_job(job: Job, folder: Path) -> list[Path]:
    """The job's files in ``folder``: its mammograms (any other object of the study, an SR or a
    presentation state say, is no part of the exam and never analysed or referenced)."""
    wanted = {i.sop_uid for i in job.instances}
    out = []
    for path in iter_input_files([folder]):
        if WATCH_RESULTS in path.relative_to(folder).parts:
            continue
        header = _header(path)
        if header is None:
            continue
        if str(header.get("StudyInstanceUID", "")) == job.study_uid and str(header.get("SOPInstanceUID", "")) in wanted:
            out.append(path)
    return out


@dataclass
class _Seen:
    mtime_ns: int
    size: int
    header: Dataset | None


class WatchFolder:
    """Studies dropped into a folder: a study is queued once none of its files has changed for
    ``quiet_seconds``; results are written beside the files (``<folder>/cad-results/<study>/``)."""

    name = "watch"

    def __init__(self, root: Path, quiet_seconds: float = 10.0) -> None:
        self.root = root
        self.quiet = quiet_seconds
        self._cache: dict[Path, _Seen] = {}
        #: files that are not work, each said once per version (modification time)
        self._reported: dict[Path, float] = {}
        self.unsettled = 0

    def _headers(self) -> dict[Path, tuple[Dataset | None, float]]:
        found: dict[Path, tuple[Dataset | None, float]] = {}
        for path in iter_input_files([self.root]):
            if WATCH_RESULTS in path.relative_to(self.root).parts:
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            seen = self._cache.get(path)
            if seen is None or (seen.mtime_ns, seen.size) != (stat.st_mtime_ns, stat.st_size):
                seen = _Seen(stat.st_mtime_ns, stat.st_size, _header(path))
                self._cache[path] = seen
            found[path] = (seen.header, stat.st_mtime_ns / 1e9)
        return found

    def poll(self, queue: JobQueue) -> int:
        groups: dict[str, list[tuple[Path, Dataset, float]]] = {}
        now = time.time()
        for path, (header, mtime) in self._headers().items():
            if header is not None and header.get("StudyInstanceUID") and not_mammogram(header) is None:
                groups.setdefault(str(header.StudyInstanceUID), []).append((path, header, mtime))
            elif now - mtime >= self.quiet and self._reported.get(path) != mtime:  # settled: not a file being copied
                self._reported[path] = mtime
                reason = not_mammogram(header) if header is not None else None
                if reason:
                    log.warning("skipped: %s: %s", path, reason)
                else:  # it might have been a mammogram
                    log.warning("not analysed: %s: %s", path, "not a DICOM file (no DICM preamble or header)"
                                if header is None else "no StudyInstanceUID")
        added, unsettled = 0, 0
        for uid, files in groups.items():
            if now - max(m for _, _, m in files) < self.quiet:
                unsettled += 1
                continue
            instances = mg_instances_of(h for _, h, _ in files)
            if not instances:
                continue
            location = _common_folder([p for p, _, _ in files])
            _, new = queue.enqueue(uid, instances, self.name, str(location))
            if new:
                added += 1
                log.info("queued study %s (%d MG images) from the watched folder", uid_tail(uid), len(instances))
        self.unsettled = unsettled
        return added

    def fetch(self, job: Job, folder: Path) -> list[Path]:
        return files_of_job(job, Path(job.location or self.root))

    def results_folder(self, job: Job) -> Path:
        return Path(job.location or self.root) / WATCH_RESULTS


def _common_folder(paths: list[Path]) -> Path:
    parents = [p.parent for p in paths]
    common = parents[0]
    while not all(common == p or common in p.parents for p in parents):
        common = common.parent
    return common


#: SOP classes the C-STORE SCP accepts: mammograms (For Processing is accepted and then recorded
#: as not analysed, so that nothing a modality sends disappears silently)
SCP_SOP_CLASSES = (MG_FOR_PRESENTATION, MG_FOR_PROCESSING)
#: transfer syntaxes the SCP accepts for them: those ingest decodes
SCP_TRANSFER_SYNTAXES = SUPPORTED_TRANSFER_SYNTAXES
#: the calling AE title of the C-STORE SCU
SCU_AE_TITLE = "MAMMO_CAD"


class StoreScp:
    """DICOM C-STORE SCP (pynetdicom): pushed instances are filed by study; a study is queued
    after ``quiet_seconds`` without a new instance."""

    name = "scp"

    def __init__(self, state: Path, ae_title: str, port: int, host: str = "0.0.0.0",
                 quiet_seconds: float = 10.0, allowed: tuple[str, ...] = ()) -> None:
        self.incoming = state / "incoming"
        self.ae_title, self.port, self.host = ae_title, port, host
        #: calling AE titles accepted (empty: any; associations from others are rejected)
        self.allowed = allowed
        self.quiet = quiet_seconds
        self._arrivals: dict[str, tuple[Path, float]] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        self.unsettled = 0

    def start(self) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import time

        ae = AE(ae_title=self.ae_title)
        if self.allowed:
            ae.require_calling_aet = list(self.allowed)
        for uid in SCP_SOP_CLASSES:  # every transfer syntax ingest decodes, compressed ones included
            ae.add_supported_context(uid, sorted(SCP_TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        handlers: list[evt.EventHandlerType] = [(evt.EVT_C_STORE, self._on_store)]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        log.info("DICOM C-STORE SCP %s listening on port %d", self.ae_title, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_store(self, event: Any) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            study = str(ds.StudyInstanceUID)
            if not (is_valid_uid(study) and is_valid_uid(str(ds.SOPInstanceUID))):
                log.warning("C-STORE refused an instance with an invalid Study or SOP Instance UID")
                return 0xC211
            folder = self.incoming / study
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            tmp = path.with_suffix(".part")
            ds.save_as(tmp, enforce_file_format=True)
            tmp.replace(path)
        except Exception as exc:  # noqa: BLE001 - refuse the instance; the sender sees the failure and can resend
            log.warning("C-STORE refused an instance (%s)", type(exc).__name__)
            return 0xC210
        with self._lock:
            self._arrivals[study] = (folder, time.time())
        return 0x0000

    def poll(self, queue: JobQueue) -> int:
        now, added = time.time(), 0
        with self._lock:
            settled = {k: v for k, v in self._arrivals.items() if now - v[1] >= self.quiet}
            for key in settled:
                del self._arrivals[key]
            self.unsettled = len(self._arrivals)
        for study, (folder, _) in settled.items():
            headers = (_header(path) for path in sorted(folder.glob("*.dcm")))
            instances = mg_instances_of(h for h in headers if h is not None)
            if instances:
                _, new = queue.enqueue(study, instances, self.name, str(folder))
                added += int(new)
                if new:
                    log.info("queued study %s (%d MG images) received over DICOM", uid_tail(study), len(instances))
        return added

    def fetch(self, job: Job, folder: Path) -> list[Path]:
        return files_of_job(job, Path(job.location or self.incoming / job.study_uid))


class StoreScu:
    """Delivers outputs to a DICOM peer with C-STORE (sites without DICOMweb)."""

    name = "c-store"

    def __init__(self, address: str, calling_ae: str = SCU_AE_TITLE) -> None:
        try:
            ae_title, host_port = address.split("@", 1)
            host, port = host_port.rsplit(":", 1)
            self.peer = (ae_title, host, int(port))
        except ValueError:
            raise ValueError(f"--send {address}: use AET@HOST:PORT") from None
        self.calling_ae = calling_ae

    def deliver(self, paths: list[Path]) -> None:
        from pynetdicom import AE

        if not paths:
            return
        datasets = [pydicom.dcmread(p) for p in paths]
        ae = AE(ae_title=self.calling_ae)
        for uid in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(uid, [str(ds.file_meta.TransferSyntaxUID) for ds in datasets
                                           if str(ds.SOPClassUID) == uid][:1])
        ae_title, host, port = self.peer
        association = ae.associate(host, port, ae_title=ae_title)
        if not association.is_established:
            raise PacsError(f"C-STORE association with {ae_title} refused or unreachable")
        try:
            for ds in datasets:
                status = association.send_c_store(ds)
                if not status or int(status.Status) not in (0x0000, 0xB000, 0xB007, 0xB006):
                    raise PacsError(f"C-STORE to {ae_title} failed (status {getattr(status, 'Status', 'none')})")
        finally:
            association.release()
