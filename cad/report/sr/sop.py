"""Mammography CAD SR IOD (PS3.3 A.35.5), the SOP class highdicom does not provide."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from highdicom.sr import ContainerContentItem, ContentSequence
from highdicom.sr.sop import _SR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DataElementSequence

from cad.report.sr.content import MammographyCADReport, pending_references
from cad.report.sr.enum import MAMMOGRAPHY_CAD_SR_STORAGE, ROOT_TEMPLATE_ID

CONTENT_SEQUENCE = 0x0040A730


def _place_references(item: Dataset) -> None:
    """Append each item's pending by-reference children after its by-value ones, depth first.

    Sequences that receive references become plain pydicom sequences: highdicom's content
    sequence accepts only by-value content items.
    """
    children = list(item.get("ContentSequence", []))
    for child in children:
        _place_references(child)
    refs = pending_references(item) if hasattr(item, "_cad_references") else []
    if refs:
        item[CONTENT_SEQUENCE] = DataElement(CONTENT_SEQUENCE, "SQ", DataElementSequence([*children, *refs]))


class MammographyCADSR(_SR):
    """SOP class for a Mammography CAD SR document (SOP Class UID 1.2.840.10008.5.1.4.1.1.88.50).

    The content tree is a TID 4000 :class:`MammographyCADReport`; patient and study attributes
    are copied from the first evidence dataset, as for highdicom's other SR classes.
    """

    def __init__(
        self,
        evidence: Sequence[Dataset],
        content: MammographyCADReport,
        series_instance_uid: str,
        series_number: int,
        sop_instance_uid: str,
        instance_number: int,
        manufacturer: str,
        is_complete: bool = True,
        **kwargs: Any,
    ) -> None:
        """
        Parameters
        ----------
        evidence: Sequence[pydicom.dataset.Dataset]
            Headers of every image referenced in the content tree, all of one study.
        content: cad.report.sr.content.MammographyCADReport
            The document root.
        series_instance_uid, series_number, sop_instance_uid, instance_number, manufacturer:
            Identity of the document and of the device that made it.
        is_complete: bool, optional
            Completion Flag: the device writes a complete report of its own results.
        **kwargs: Any
            Passed to :class:`highdicom.base.SOPClass` (e.g. ``software_versions``).
        """
        if not isinstance(content, MammographyCADReport):
            raise TypeError("content must be a MammographyCADReport (TID 4000 root)")
        studies = {str(ds.StudyInstanceUID) for ds in evidence}
        if len(studies) > 1:
            raise ValueError(f"evidence spans {len(studies)} studies; a CAD report covers one study")
        referenced = set(content.library.sop_instance_uids)
        missing = referenced - {str(ds.SOPInstanceUID) for ds in evidence}
        if missing:
            raise ValueError(f"no evidence given for referenced images: {sorted(missing)}")
        # highdicom deep-copies and re-parses the whole tree it is given and searches it for
        # image references (about 1 s for 40 findings); every reference here is an Image Library
        # entry, checked above, and the evidence sequences it writes come from ``evidence``
        # alone, so it is given the bare root and the tree is attached afterwards.
        bare_root = ContainerContentItem(content.name, template_id=ROOT_TEMPLATE_ID)
        # highdicom's __setattr__ hint names only data elements; it converts a list of items
        bare_root.ContentSequence = []  # type: ignore[assignment]
        super().__init__(
            evidence=evidence,
            content=bare_root,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            sop_class_uid=MAMMOGRAPHY_CAD_SR_STORAGE,
            instance_number=instance_number,
            manufacturer=manufacturer,
            is_complete=is_complete,
            **kwargs,
        )
        self.ContentSequence = content.ContentSequence
        self._content = ContentSequence([content], is_root=True)
        _place_references(self)
