"""Deterministic DICOM UIDs for the objects the CAD writes.

Every UID is ``2.25.<UUID as integer>`` (PS3.5 B.2) for a name-based UUID (RFC 9562 version 5)
in the product's own namespace UUID. That makes the namespace the product's UID root without a
registered organisation root, and it makes UIDs reproducible: the same input instances analysed
by the same locked model give the same SR and presentation-state UIDs, so a PACS receiving a
re-run de-duplicates instead of storing a second copy.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable

#: The product's namespace: every UID the device writes derives from it (one place to change).
PRODUCT_NAMESPACE = uuid.UUID("6d616d6d-6f2d-5cad-8000-64756176696e")
UID_PREFIX = "2.25."
_UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def derived_uid(kind: str, parts: Iterable[str]) -> str:
    """A UID for object ``kind`` (e.g. ``"sr-instance"``) determined by ``parts`` and nothing else.

    ``parts`` are joined in the order given; callers pass input UIDs sorted so that the order of
    files on disk does not change the result.
    """
    items = [kind, *parts]
    if any("\n" in item for item in items):
        raise ValueError("UID name parts must not contain line breaks")
    name = "\n".join(items)
    return f"{UID_PREFIX}{uuid.uuid5(PRODUCT_NAMESPACE, name).int}"


def uid_tail(uid: str) -> str:
    """How logs and messages name a study: the last 8 characters of its UID, never the whole UID
    (a full UID can be looked up in a PACS; the tail only helps an operator match lines)."""
    return f"…{uid[-8:]}"


def is_valid_uid(value: str) -> bool:
    """True when ``value`` is a syntactically valid DICOM UID (PS3.5 9.1): digits and dots, no
    leading zeros in a component, at most 64 characters."""
    return len(value) <= 64 and bool(_UID_PATTERN.match(value))


def output_uids(
    study_instance_uid: str, input_sop_instance_uids: Iterable[str], model_sha256: str,
    settings_sha256: str | None,
) -> dict[str, str]:
    """Series and instance UIDs of the SR and the presentation state written for one study.

    Determined by the study, the set of input instances (analysed or not) and the locked model
    with its settings: a re-run of the same model on the same images reproduces them, and any
    change of model, threshold or input set gives new ones.
    """
    parts = [study_instance_uid, *sorted(set(input_sop_instance_uids)), model_sha256, settings_sha256 or ""]
    series = [study_instance_uid, model_sha256, settings_sha256 or ""]
    return {
        "sr_series": derived_uid("cad-sr-series", series),
        "sr_instance": derived_uid("cad-sr-instance", parts),
        "pr_series": derived_uid("cad-pr-series", series),
        "pr_instance": derived_uid("cad-pr-instance", parts),
    }


def instance_set_sha256(sop_instance_uids: Iterable[str]) -> str:
    """The identity of a study's set of instances: SHA-256 of its distinct SOP Instance UIDs,
    sorted, one per line. The one rule of `cad batch`'s ledger and `cad serve`'s queue: a study
    whose instances change is new work, the same set in any order or repeated is not."""
    return hashlib.sha256("\n".join(sorted(set(sop_instance_uids))).encode()).hexdigest()
