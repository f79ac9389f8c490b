"""A throwaway Orthanc PACS on loopback (Debian's orthanc and orthanc-dicomweb packages).

Development tooling for the integration tests and the load test: its own configuration,
storage and free ports under a folder, started as a child process and stopped with it. Nothing
here runs at a site; a site points `cad serve` at its own PACS.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pydicom
import requests
from pydicom.dataset import Dataset

ORTHANC_BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port() -> int:
    """A TCP port nobody listens on at the moment (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def orthanc_available() -> str | None:
    """None when Orthanc and its DICOMweb plugin are installed, else what is missing."""
    missing = [p for p in (ORTHANC_BINARY, DICOMWEB_PLUGIN) if not Path(p).exists()]
    return f"not installed: {', '.join(missing)} (Debian packages orthanc, orthanc-dicomweb)" if missing else None


@dataclass
class Orthanc:
    """A running Orthanc: REST at ``url``, DICOMweb at ``dicomweb``, DICOM at ``aet``@``dicom_port``."""

    folder: Path
    http_port: int = 0
    dicom_port: int = 0
    aet: str = "ORTHANC"
    process: subprocess.Popen[bytes] | None = None
    #: HTTP users (name -> password); none: no authentication, as on a closed test network
    users: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout: float = 30.0, modalities: dict[str, list[object]] | None = None) -> Orthanc:
        problem = orthanc_available()
        if problem:
            raise RuntimeError(f"Orthanc {problem}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port = self.http_port or free_port()
        self.dicom_port = self.dicom_port or free_port()
        config = {
            "Name": "cad-test-pacs", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": self.aet, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users), "RegisteredUsers": self.users or {},
            "HttpBindAddress": "127.0.0.1",
            "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": modalities or {}, "StableAge": 1, "ConcurrentJobs": 2,
            "HttpThreadsCount": 8, "LimitFindResults": 0, "LimitFindInstances": 0,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        log = (self.folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen([ORTHANC_BINARY, str(path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start-up (log: {self.folder / 'orthanc.log'})")
            try:
                answer = requests.get(f"{self.url}/system", timeout=1)
                if answer.ok or (self.users and answer.status_code == 401):
                    return self
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def upload(self, paths: list[Path]) -> None:
        """Store DICOM files through the REST API (the way a modality's images arrive)."""
        for path in paths:
            response = requests.post(f"{self.url}/instances", data=path.read_bytes(), timeout=60)
            response.raise_for_status()

    def studies(self) -> list[str]:
        return list(requests.get(f"{self.url}/studies", timeout=30).json())

    def instances(self, study_uid: str, sop_class: str) -> list[Dataset]:
        """The instances of one SOP class the PACS holds in a study, read back as DICOM (only
        those of that class are downloaded)."""
        out = []
        for found in requests.post(f"{self.url}/tools/lookup", data=study_uid, timeout=30).json():
            if found.get("Type") != "Study":
                continue
            for instance in requests.get(f"{self.url}/studies/{found['ID']}/instances", timeout=60).json():
                tags = requests.get(f"{self.url}/instances/{instance['ID']}/simplified-tags", timeout=30).json()
                if tags.get("SOPClassUID") == sop_class:
                    raw = requests.get(f"{self.url}/instances/{instance['ID']}/file", timeout=60).content
                    out.append(pydicom.dcmread(io.BytesIO(raw)))
        return out

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
