"""Who made a DICOM object the CAD writes: the General Equipment facts every output carries."""

from __future__ import annotations

from dataclasses import dataclass

import cad


@dataclass(frozen=True)
class Equipment:
    manufacturer: str
    model_name: str
    software_versions: str
    device_serial_number: str


#: The device as it names itself in SR and presentation-state objects.
DEVICE = Equipment(
    manufacturer="mammo-cad",
    model_name=cad.ALGORITHM_NAME,
    software_versions=cad.__version__,
    device_serial_number="mammo-cad-" + cad.__version__,
)

#: Series numbers the CAD writes, chosen high so they sort after the acquisition series.
SR_SERIES_NUMBER = 9901
PR_SERIES_NUMBER = 9902
