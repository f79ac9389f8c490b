"""Coded concepts of the Mammography CAD SR (PS3.16 TID 4000 family) that the device uses.

Codes come from pydicom's code dictionary where it has them, so their values and meanings are
the standard's and not retyped here.
"""

from __future__ import annotations

import enum

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

MAMMOGRAPHY_CAD_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.50"
#: Mapping Resource and template identifier of the document root (Content Template Sequence).
TEMPLATE_MAPPING_RESOURCE = "DCMR"
ROOT_TEMPLATE_ID = "4000"

DCM = codes.DCM
MAMMOGRAPHY_CAD_REPORT = DCM.MammographyCADReport
IMAGE_LIBRARY = DCM.ImageLibrary
CAD_PROCESSING_AND_FINDINGS_SUMMARY = DCM.CADProcessingAndFindingsSummary
SUMMARY_OF_DETECTIONS = DCM.SummaryOfDetections
SUMMARY_OF_ANALYSES = DCM.SummaryOfAnalyses
# pydicom's meaning for 111034 carries a zero-width space; write the standard's text.
INDIVIDUAL_IMPRESSION_RECOMMENDATION = Code("111034", "DCM", "Individual Impression/Recommendation")
RENDERING_INTENT = DCM.RenderingIntent
COMPOSITE_FEATURE = DCM.CompositeFeature
SINGLE_IMAGE_FINDING = DCM.SingleImageFinding
CERTAINTY_OF_FINDING = DCM.CertaintyOfFinding
CERTAINTY_OF_FEATURE = DCM.CertaintyOfFeature
CAD_OPERATING_POINT = DCM.CADOperatingPoint
CENTER = DCM.Center
OUTLINE = DCM.Outline
SUCCESSFUL_DETECTIONS = DCM.SuccessfulDetections
FAILED_DETECTIONS = DCM.FailedDetections
DETECTION_PERFORMED = DCM.DetectionPerformed
SUCCESSFUL_ANALYSES = DCM.SuccessfulAnalyses
FAILED_ANALYSES = DCM.FailedAnalyses
ANALYSIS_PERFORMED = DCM.AnalysisPerformed
#: CID 6043 Types of Mammography CAD Analysis: what CC/MLO linking is.
SPATIAL_COLLOCATION = Code("133884007", "SCT", "Spatial collocation analysis")
ALGORITHM_NAME = DCM.AlgorithmName
ALGORITHM_VERSION = DCM.AlgorithmVersion
ALGORITHM_PARAMETERS = DCM.AlgorithmParameters
IMAGE_LATERALITY = DCM.ImageLaterality
IMAGE_VIEW = DCM.ImageView
STUDY_DATE = DCM.StudyDate
CONTENT_DATE = DCM.ContentDate
HORIZONTAL_PIXEL_SPACING = DCM.HorizontalPixelSpacing
VERTICAL_PIXEL_SPACING = DCM.VerticalPixelSpacing
PATIENT_ORIENTATION_ROW = DCM.PatientOrientationRow
PATIENT_ORIENTATION_COLUMN = DCM.PatientOrientationColumn

TRACKING_IDENTIFIER = DCM.TrackingIdentifier
# pydicom spells these meanings differently from CID 6035 / TID 4005; write the standard's text.
COMPOSITE_TYPE = Code("111016", "DCM", "Composite Type")
SCOPE_OF_FEATURE = DCM.ScopeOfFeature
#: CID 6035: the two views of a linked finding show the same place in the breast.
RELATED_SPATIALLY = Code("111154", "DCM", "Target content items are related spatially")
#: CID 6036.
DETECTED_ON_MULTIPLE_IMAGES = DCM.FeatureDetectedOnMultipleImages

#: What every finding of the product is: a mass (CID 6016 Mammography Composite Feature; not in
#: pydicom's dictionary). The value of a linked finding's Composite Feature, of a single-view
#: finding's Single Image Finding (TID 4006) and of Detection Performed (TID 4017). CID 6014, the
#: value set of those two, is extensible and lists no mass; its nearest entry, (129793001, SCT,
#: "Mammography breast density"), was the PS3.17 examples' BI-RADS 3rd-edition word for a finding
#: seen on one view, but a radiologist reads it as breast composition (docs/dicom-outputs.md).
MASS = Code("129788004", "SCT", "Mammographic breast mass")
#: CID 6022 Side.
LATERALITY_CODES: dict[str, Code] = {"R": codes.cid6022.RightBreast, "L": codes.cid6022.LeftBreast}


class StatusOfResults(enum.Enum):
    """CID 6042 Status of Results (Summary of Detections / Analyses)."""

    SUCCEEDED = DCM.Succeeded
    PARTIALLY_SUCCEEDED = DCM.PartiallySucceeded
    FAILED = DCM.Failed
    NOT_ATTEMPTED = DCM.NotAttempted


class ProcessingSummary(enum.Enum):
    """CID 6047 CAD Processing and Findings Summary."""

    ALL_SUCCEEDED_WITH_FINDINGS = DCM.AllAlgorithmsSucceededWithFindings
    ALL_SUCCEEDED_WITHOUT_FINDINGS = DCM.AllAlgorithmsSucceededWithoutFindings
    NOT_ALL_SUCCEEDED_WITH_FINDINGS = DCM.NotAllAlgorithmsSucceededWithFindings
    NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS = DCM.NotAllAlgorithmsSucceededWithoutFindings
    NONE_SUCCEEDED_WITHOUT_FINDINGS = DCM.NoAlgorithmsSucceededWithoutFindings

    @classmethod
    def of(cls, *, any_failed: bool, any_succeeded: bool, with_findings: bool) -> ProcessingSummary:
        if not any_succeeded:
            return cls.NONE_SUCCEEDED_WITHOUT_FINDINGS
        if any_failed:
            return cls.NOT_ALL_SUCCEEDED_WITH_FINDINGS if with_findings else cls.NOT_ALL_SUCCEEDED_WITHOUT_FINDINGS
        return cls.ALL_SUCCEEDED_WITH_FINDINGS if with_findings else cls.ALL_SUCCEEDED_WITHOUT_FINDINGS


class RenderingIntent(enum.Enum):
    """CID 6034 Intended Use of CAD Output."""

    PRESENTATION_REQUIRED = DCM.PresentationRequiredRenderingDeviceIsExpectedToPresent
    PRESENTATION_OPTIONAL = DCM.PresentationOptionalRenderingDeviceMayPresent
    NOT_FOR_PRESENTATION = DCM.NotForPresentationRenderingDeviceExpectedNotToPresent


#: Coded concepts highdicom writes into the device's objects on its own (the language of the
#: content, the "Source" of image references, the purposes of the Contributing Equipment items):
#: listed so that the DICOM Conformance Statement names every code the outputs carry.
LIBRARY_WRITTEN: tuple[Code, ...] = (
    DCM.LanguageOfContentItemAndDescendants,
    Code("en-US", "RFC5646", "English (United States)"),
    Code("260753009", "SCT", "Source"),
    DCM.AcquisitionEquipment,
    DCM.ProcessingEquipment,
)
