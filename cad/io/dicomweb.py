"""A DICOMweb PACS as an input: QIDO-RS to find MG studies and their instances, WADO-RS to fetch
them, STOW-RS to store outputs (dicomweb-client underneath).

Shared by `cad serve` (polling a PACS) and `cad batch` (an archive on a PACS). Every failure to
reach the PACS, or a request it refuses, is one :class:`PacsError` naming the request and the
HTTP status; the client's own retries are off, because the caller owns retrying (the service's
queue with backoff and an audit trail, the batch run's per-study record).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from pydicom.dataset import Dataset

from cad.errors import SourceUnreachable, UsageError
from cad.io.uids import is_valid_uid, uid_tail

log = logging.getLogger(__name__)

#: DICOM attribute tags used in QIDO-RS answers (DICOM JSON)
STUDY_UID, SERIES_UID, SOP_UID, RELATED_INSTANCES = "0020000D", "0020000E", "00080018", "00201208"


#: the DICOMweb transactions the device uses as a user agent, with what it asks (the DICOM
#: Conformance Statement is generated from this table)
DICOMWEB_TRANSACTIONS: tuple[tuple[str, str, str], ...] = (
    ("QIDO-RS", "Search for studies",
     "ModalitiesInStudy=MG, StudyDate={since}- when given; includefield NumberOfStudyRelatedInstances; "
     "one request, no paging (limit/offset not used)"),
    ("QIDO-RS", "Search for instances of a study", "Modality=MG; reads Series and SOP Instance UIDs"),
    ("WADO-RS", "Retrieve instance", "application/dicom of each listed MG instance, any transfer syntax"),
    ("STOW-RS", "Store instances", "the SR and presentation states of a study (cad serve); a FailedSOPSequence "
                                   "in the response is an error"),
)


class PacsError(SourceUnreachable, RuntimeError):
    """The PACS or DICOM peer could not be reached or refused a request (transient)."""


@dataclass(frozen=True)
class RemoteInstance:
    """One MG instance on the PACS: enough to fetch it with WADO-RS."""

    series_uid: str
    sop_uid: str


@dataclass(frozen=True)
class RemoteStudy:
    study_uid: str
    #: Number of Study Related Instances as the PACS reports it (-1: not reported)
    instances: int


def read_authorization(path: Path) -> str:
    """The PACS Authorization header value from a file: one line ``Bearer <token>`` or
    ``Basic <base64>``; ValueError otherwise (the value itself is never printed)."""
    value = path.read_text().strip()
    scheme, _, credential = value.partition(" ")
    if scheme not in ("Bearer", "Basic") or not credential:
        raise UsageError(f"{path}: expected one line 'Bearer <token>' or 'Basic <base64>'")
    return value


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


class DicomWeb:
    """One PACS's DICOMweb root (one client: not to be shared between threads)."""

    def __init__(self, url: str, timeout: float = 60.0, headers: dict[str, str] | None = None) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.url = url.rstrip("/")
        self.headers = headers
        self.client = DICOMwebClient(self.url, headers=headers, timeout=timeout)
        self.client.set_http_retry_params(retry=False)
        #: whether the last request reached the PACS (None: none made yet)
        self.reachable: bool | None = None

    def call(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` with any failure to reach the PACS as one PacsError."""
        try:
            result = function(*args, **kwargs)
        except (requests.RequestException, OSError) as exc:
            self.reachable = False
            status = getattr(getattr(exc, "response", None), "status_code", None)
            raise PacsError(f"DICOMweb {what} failed ({type(exc).__name__}{f', HTTP {status}' if status else ''})") from None
        self.reachable = True
        return result

    def mg_studies(self, since: str | None = None) -> list[RemoteStudy]:
        """Studies with MG images (on or after ``since``, YYYYMMDD), invalid UIDs left out."""
        filters: dict[str, Any] = {"ModalitiesInStudy": "MG"}
        if since:
            filters["StudyDate"] = f"{since}-"
        # one request, not paged: Orthanc 1.10's DICOMweb plugin answers an offset beyond the first
        # page with nothing, and dicomweb-client's get_remaining loops for ever on servers that
        # ignore offset; a PACS that caps QIDO answers must allow the studies asked for
        found = self.call("study search", self.client.search_for_studies, search_filters=filters,
                          fields=["NumberOfStudyRelatedInstances"])
        studies = []
        for item in found:
            uid = _value(item, STUDY_UID)
            if not uid or not is_valid_uid(str(uid)):
                if uid:
                    log.warning("a study with an invalid StudyInstanceUID was ignored")
                continue
            studies.append(RemoteStudy(str(uid), int(_value(item, RELATED_INSTANCES) or -1)))
        return studies

    def mg_instances(self, study_uid: str) -> list[RemoteInstance]:
        """The study's MG instances as the PACS lists them now (invalid UIDs left out)."""
        found = self.call("instance search", self.client.search_for_instances,
                          study_instance_uid=study_uid, search_filters={"Modality": "MG"})
        instances = [RemoteInstance(str(_value(i, SERIES_UID)), str(_value(i, SOP_UID))) for i in found
                     if _value(i, SERIES_UID) and _value(i, SOP_UID)]
        valid = [i for i in instances if is_valid_uid(i.series_uid) and is_valid_uid(i.sop_uid)]
        if len(valid) < len(instances):
            log.warning("study %s: %d instance(s) with invalid UIDs ignored", uid_tail(study_uid), len(instances) - len(valid))
        return valid

    def retrieve(self, study_uid: str, instance: RemoteInstance, folder: Path) -> Path:
        """WADO-RS one instance into ``folder/<SOPInstanceUID>.dcm`` (kept if already there)."""
        path = folder / f"{instance.sop_uid}.dcm"
        if not path.is_file():
            ds = self.call("retrieve", self.client.retrieve_instance, study_uid, instance.series_uid, instance.sop_uid)
            tmp = path.with_suffix(".part")
            ds.save_as(tmp, enforce_file_format=True)
            tmp.replace(path)
        return path

    def store(self, datasets: list[Dataset]) -> None:
        """STOW-RS ``datasets``; a store the PACS reports as failed is an error."""
        if not datasets:
            return
        response: Dataset = self.call("store", self.client.store_instances, datasets=datasets)
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            raise PacsError(f"DICOMweb store refused {len(failed)} of {len(datasets)} objects")
