"""Building blocks of the Mammography CAD SR content tree (PS3.16 TID 4000 family).

Each class is one template or template row, built on highdicom's SR content items so that value
types, codes and relationship types are validated where they are made. highdicom has no
by-reference relationships; :class:`ContentItemReference` adds them, and the items that need one
keep it pending until :class:`cad.report.sr.sop.MammographyCADSR` places it in the tree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from highdicom.sr import (
    CodeContentItem,
    CodedConcept,
    ContainerContentItem,
    DateContentItem,
    GraphicTypeValues,
    ImageContentItem,
    LanguageOfContentItemAndDescendants,
    NumContentItem,
    RelationshipTypeValues,
    ScoordContentItem,
    TextContentItem,
)
from highdicom.sr.templates import DEFAULT_LANGUAGE, Template
from highdicom.sr.value_types import ContentItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from cad.io.codes import VIEW_CODE_FOR
from cad.io.image import View
from cad.report.sr import enum as sr

HAS_PROPERTIES = RelationshipTypeValues.HAS_PROPERTIES
HAS_CONCEPT_MOD = RelationshipTypeValues.HAS_CONCEPT_MOD
HAS_ACQ_CONTEXT = RelationshipTypeValues.HAS_ACQ_CONTEXT
HAS_OBS_CONTEXT = RelationshipTypeValues.HAS_OBS_CONTEXT
CONTAINS = RelationshipTypeValues.CONTAINS
INFERRED_FROM = RelationshipTypeValues.INFERRED_FROM
SELECTED_FROM = RelationshipTypeValues.SELECTED_FROM
PERCENT = codes.UCUM.Percent
#: TID 4020 leaves the IMAGE concept name open; like highdicom's Image Library, write "Source".
SOURCE = CodedConcept("260753009", "SCT", "Source")
MILLIMETER = Code("mm", "UCUM", "millimeter")  # pydicom's meaning is "mm"; TID 4020 says "millimeter"


class ContentItemReference(Dataset):
    """A by-reference relationship (PS3.3 C.17.3.2.4): the target is another content item of the
    same document, identified by its position path from the root (root = 1)."""

    def __init__(self, relationship_type: RelationshipTypeValues, path: Sequence[int]) -> None:
        super().__init__()
        if len(path) < 2 or path[0] != 1 or any(int(p) < 1 for p in path):
            raise ValueError(f"Referenced Content Item Identifier must start at the root (1): {list(path)}")
        self.RelationshipType = RelationshipTypeValues(relationship_type).value
        self.ReferencedContentItemIdentifier = [int(p) for p in path]


def pending_references(item: Dataset) -> list[ContentItemReference]:
    """By-reference children an item still has to receive (appended after its by-value children)."""
    refs = getattr(item, "_cad_references", None)
    if refs is None:
        refs = []
        object.__setattr__(item, "_cad_references", refs)
    return refs


def _refer(item: ContentItem, relationship: RelationshipTypeValues, path: Sequence[int]) -> None:
    pending_references(item).append(ContentItemReference(relationship, path))


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


class ImageLibraryEntry(ImageContentItem):
    """TID 4020 CAD Image Library Entry: one mammogram with its laterality, view and dates."""

    def __init__(
        self,
        header: Dataset,
        laterality: str | None = None,
        view: View | None = None,
    ) -> None:
        for keyword in ("SOPClassUID", "SOPInstanceUID"):
            if keyword not in header:
                raise ValueError(f"image library entry needs {keyword} in the image header")
        super().__init__(
            name=SOURCE,
            referenced_sop_class_uid=str(header.SOPClassUID),
            referenced_sop_instance_uid=str(header.SOPInstanceUID),
            relationship_type=CONTAINS,
        )
        items: list[ContentItem] = []
        if laterality is not None:
            if laterality not in sr.LATERALITY_CODES:
                raise ValueError(f"Image Laterality must be R or L, got {laterality!r}")
            items.append(CodeContentItem(sr.IMAGE_LATERALITY, sr.LATERALITY_CODES[laterality],
                                         relationship_type=HAS_ACQ_CONTEXT))
        if view is not None and view in VIEW_CODE_FOR:
            value, scheme, meaning = VIEW_CODE_FOR[view]
            items.append(CodeContentItem(sr.IMAGE_VIEW, Code(value, scheme, meaning),
                                         relationship_type=HAS_ACQ_CONTEXT))
        orientation = header.get("PatientOrientation")
        if orientation is not None and len(orientation) == 2:
            items.append(TextContentItem(sr.PATIENT_ORIENTATION_ROW, str(orientation[0]),
                                         relationship_type=HAS_ACQ_CONTEXT))
            items.append(TextContentItem(sr.PATIENT_ORIENTATION_COLUMN, str(orientation[1]),
                                         relationship_type=HAS_ACQ_CONTEXT))
        for concept, keyword in ((sr.STUDY_DATE, "StudyDate"), (sr.CONTENT_DATE, "ContentDate")):
            if str(header.get(keyword, "")).strip():
                items.append(DateContentItem(concept, str(header.get(keyword)).strip(),
                                             relationship_type=HAS_ACQ_CONTEXT))
        spacing = header.get("ImagerPixelSpacing") or header.get("PixelSpacing")
        if spacing is not None and len(spacing) == 2:
            # PixelSpacing is row spacing (vertical) then column spacing (horizontal)
            items.append(NumContentItem(sr.HORIZONTAL_PIXEL_SPACING, float(spacing[1]), MILLIMETER,
                                        relationship_type=HAS_ACQ_CONTEXT))
            items.append(NumContentItem(sr.VERTICAL_PIXEL_SPACING, float(spacing[0]), MILLIMETER,
                                        relationship_type=HAS_ACQ_CONTEXT))
        if items:
            self.ContentSequence = items


class CADImageLibrary(ContainerContentItem):
    """TID 4000 row 3: the Image Library, and where each image sits in the content tree."""

    def __init__(self, entries: Sequence[ImageLibraryEntry], position: Sequence[int]) -> None:
        if not entries:
            raise ValueError("the Image Library needs at least one image (TID 4020 is 1-n)")
        super().__init__(sr.IMAGE_LIBRARY, relationship_type=CONTAINS)
        self.ContentSequence = list(entries)
        self._paths = {
            str(entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID): [*position, k]
            for k, entry in enumerate(entries, start=1)
        }

    @property
    def sop_instance_uids(self) -> list[str]:
        return list(self._paths)

    def path_of(self, sop_instance_uid: str) -> list[int]:
        try:
            return self._paths[sop_instance_uid]
        except KeyError:
            raise ValueError(f"image {sop_instance_uid} is not in the Image Library") from None


class AlgorithmIdentification(Template):
    """TID 4019 CAD Algorithm Identification, invoked with HAS PROPERTIES (TID 4006, TID 4017).

    highdicom's own class writes HAS CONCEPT MOD, which the mammography templates do not use.
    """

    def __init__(self, name: str, version: str, parameters: Sequence[str] = ()) -> None:
        super().__init__()
        self.identity = (name, version)
        self.append(TextContentItem(sr.ALGORITHM_NAME, name, relationship_type=HAS_PROPERTIES))
        self.append(TextContentItem(sr.ALGORITHM_VERSION, version, relationship_type=HAS_PROPERTIES))
        for parameter in parameters:
            self.append(TextContentItem(sr.ALGORITHM_PARAMETERS, parameter, relationship_type=HAS_PROPERTIES))


def _rendering_intent(intent: sr.RenderingIntent) -> CodeContentItem:
    return CodeContentItem(sr.RENDERING_INTENT, intent.value, relationship_type=HAS_CONCEPT_MOD)


def _tracking_identifier(identifier: str) -> TextContentItem:
    return TextContentItem(sr.TRACKING_IDENTIFIER, identifier, relationship_type=HAS_OBS_CONTEXT)


def _percent(concept: Code, score: float) -> NumContentItem:
    _check_unit_interval(concept.meaning, score)
    return NumContentItem(concept, round(100.0 * score, 4), PERCENT, relationship_type=HAS_PROPERTIES)


class SingleImageFinding(CodeContentItem):
    """TID 4006 Mammography CAD Single Image Finding: a mass on one image, with its certainty,
    centre and rectangular outline (TID 4021), each selected from the Image Library entry."""

    def __init__(
        self,
        box: Sequence[float],
        score: float,
        intent: sr.RenderingIntent,
        algorithm: AlgorithmIdentification,
        image_path: Sequence[int],
        relationship_type: RelationshipTypeValues,
        tracking_identifier: str | None = None,
    ) -> None:
        x0, y0, x1, y1 = (float(c) for c in box)
        if not (x1 > x0 and y1 > y0 and x0 >= 0 and y0 >= 0):
            raise ValueError(f"finding box must be [x0, y0, x1, y1] with x1 > x0 >= 0, y1 > y0 >= 0: {list(box)}")
        super().__init__(sr.SINGLE_IMAGE_FINDING, sr.MASS, relationship_type=relationship_type)
        center = ScoordContentItem(sr.CENTER, GraphicTypeValues.POINT,
                                   np.array([[(x0 + x1) / 2, (y0 + y1) / 2]]), relationship_type=HAS_PROPERTIES)
        outline = ScoordContentItem(
            sr.OUTLINE, GraphicTypeValues.POLYLINE,
            np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]), relationship_type=HAS_PROPERTIES,
        )
        for scoord in (center, outline):
            _refer(scoord, SELECTED_FROM, image_path)
        items: list[ContentItem] = [_rendering_intent(intent)]
        if tracking_identifier is not None:
            items.append(_tracking_identifier(tracking_identifier))
        items += [*algorithm, _percent(sr.CERTAINTY_OF_FINDING, score), center, outline]
        self.ContentSequence = items


class CompositeFeature(CodeContentItem):
    """TID 4004 / TID 4005 Mammography CAD Composite Feature: one mass seen on the CC and the MLO
    view, inferred from the two single image findings, with the fused certainty."""

    def __init__(
        self,
        findings: Sequence[SingleImageFinding],
        score: float,
        intent: sr.RenderingIntent,
        algorithm: AlgorithmIdentification,
        tracking_identifier: str,
    ) -> None:
        if len(findings) < 2:
            raise ValueError("a composite feature is inferred from at least two single image findings")
        super().__init__(sr.COMPOSITE_FEATURE, sr.MASS, relationship_type=CONTAINS)
        self.ContentSequence = [
            _rendering_intent(intent),
            _tracking_identifier(tracking_identifier),
            CodeContentItem(sr.COMPOSITE_TYPE, sr.RELATED_SPATIALLY, relationship_type=HAS_PROPERTIES),
            CodeContentItem(sr.SCOPE_OF_FEATURE, sr.DETECTED_ON_MULTIPLE_IMAGES, relationship_type=HAS_PROPERTIES),
            *algorithm,
            _percent(sr.CERTAINTY_OF_FEATURE, score),
            *findings,
        ]


class IndividualImpressionRecommendation(ContainerContentItem):
    """TID 4003: one CAD finding, as a composite feature or a single image finding."""

    def __init__(self, finding: CompositeFeature | SingleImageFinding, intent: sr.RenderingIntent) -> None:
        super().__init__(sr.INDIVIDUAL_IMPRESSION_RECOMMENDATION, relationship_type=INFERRED_FROM)
        self.ContentSequence = [_rendering_intent(intent), finding]


class CADProcessingAndFindingsSummary(CodeContentItem):
    """TID 4001: the overall outcome, inferred from the individual findings."""

    def __init__(self, summary: sr.ProcessingSummary, impressions: Sequence[IndividualImpressionRecommendation]) -> None:
        super().__init__(sr.CAD_PROCESSING_AND_FINDINGS_SUMMARY, summary.value, relationship_type=CONTAINS)
        if impressions:
            self.ContentSequence = list(impressions)


class _Performed(CodeContentItem):
    """An algorithm run on referenced Image Library entries (TID 4017 / TID 4018), by reference
    as the mammography templates require."""

    concept: Code

    def __init__(self, value: Code, algorithm: AlgorithmIdentification, image_paths: Sequence[Sequence[int]]) -> None:
        if not image_paths:
            raise ValueError(f"a {self.concept.meaning} must reference at least one image")
        super().__init__(self.concept, value, relationship_type=CONTAINS)
        self.ContentSequence = list(algorithm)
        for path in image_paths:
            _refer(self, HAS_PROPERTIES, path)


class DetectionPerformed(_Performed):
    """TID 4017 CAD Detection Performed: mass detection on the images."""

    concept = sr.DETECTION_PERFORMED

    def __init__(self, algorithm: AlgorithmIdentification, image_paths: Sequence[Sequence[int]]) -> None:
        super().__init__(sr.MASS, algorithm, image_paths)


class AnalysisPerformed(_Performed):
    """TID 4018 CAD Analysis Performed: CC/MLO linking, a spatial collocation analysis (CID 6043)."""

    concept = sr.ANALYSIS_PERFORMED

    def __init__(self, algorithm: AlgorithmIdentification, image_paths: Sequence[Sequence[int]]) -> None:
        super().__init__(sr.SPATIAL_COLLOCATION, algorithm, image_paths)


class _Summary(CodeContentItem):
    """TID 4000 rows 6-9 with TID 4015 / TID 4016: status of one kind of processing, with the
    runs that succeeded and those that failed."""

    def __init__(
        self, name: Code, containers: tuple[Code, Code], successful: Sequence[_Performed], failed: Sequence[_Performed],
    ) -> None:
        if successful and failed:
            status = sr.StatusOfResults.PARTIALLY_SUCCEEDED
        elif successful:
            status = sr.StatusOfResults.SUCCEEDED
        elif failed:
            status = sr.StatusOfResults.FAILED
        else:
            status = sr.StatusOfResults.NOT_ATTEMPTED
        super().__init__(name, status.value, relationship_type=CONTAINS)
        items: list[ContainerContentItem] = []
        for concept, performed in zip(containers, (successful, failed)):
            if performed:
                container = ContainerContentItem(concept, relationship_type=INFERRED_FROM)
                # highdicom's __setattr__ hint names only data elements; it converts a list of items
                container.ContentSequence = list(performed)  # type: ignore[assignment]
                items.append(container)
        if items:
            self.ContentSequence = items


class SummaryOfDetections(_Summary):
    """Which images mass detection succeeded and failed on."""

    def __init__(self, successful: Sequence[DetectionPerformed], failed: Sequence[DetectionPerformed]) -> None:
        super().__init__(sr.SUMMARY_OF_DETECTIONS, (sr.SUCCESSFUL_DETECTIONS, sr.FAILED_DETECTIONS), successful, failed)


class SummaryOfAnalyses(_Summary):
    """Which images CC/MLO linking (spatial collocation) could and could not use."""

    def __init__(self, successful: Sequence[AnalysisPerformed], failed: Sequence[AnalysisPerformed]) -> None:
        super().__init__(sr.SUMMARY_OF_ANALYSES, (sr.SUCCESSFUL_ANALYSES, sr.FAILED_ANALYSES), successful, failed)


class MammographyCADReport(ContainerContentItem):
    """TID 4000 Mammography CAD Document Root.

    Children, in the template's order: language (TID 1204), Image Library, CAD Processing and
    Findings Summary, Summary of Detections, Summary of Analyses.
    """

    #: Position of the Image Library among the root's children (after the language item).
    IMAGE_LIBRARY_PATH = (1, 2)

    def __init__(
        self,
        library: CADImageLibrary,
        summary: CADProcessingAndFindingsSummary,
        detections: SummaryOfDetections,
        analyses: SummaryOfAnalyses,
        language: CodedConcept = DEFAULT_LANGUAGE,
    ) -> None:
        super().__init__(sr.MAMMOGRAPHY_CAD_REPORT, template_id=sr.ROOT_TEMPLATE_ID)
        self.library = library
        self.ContentSequence = [*LanguageOfContentItemAndDescendants(language), library, summary, detections, analyses]
