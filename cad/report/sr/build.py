"""The findings model of one study as a Mammography CAD SR (the writer side of the round trip).

Carried in the SR: study, algorithm name and version, model and settings hashes and the
operating point (as TID 4019 Algorithm Parameters), every identifiable input image with its
laterality, view and whether detection succeeded or failed (with the reason, also an Algorithm
Parameter of the failed detection), and every CAD mark (finding at or above the operating
threshold: :attr:`StudyResult.marks`) with its ID (Tracking Identifier), score, views and boxes.
Not carried: the findings below the threshold (a workstation does not show them; they stay in
findings.json for FROC analysis, and writing them cost most of the exam's output time), input
file names (local paths mean nothing to a PACS), link costs (internal to the linker) and, for
now, each finding's location (findings.json 1.4; its coding with DICOM's location concepts is
still to be done).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from pydicom.dataset import Dataset

from cad.io.dicom_reader import is_image_object
from cad.io.image import View
from cad.report.equipment import DEVICE, SR_SERIES_NUMBER
from cad.report.sr import enum as sr
from cad.report.sr.content import (
    CONTAINS,
    INFERRED_FROM,
    AlgorithmIdentification,
    AnalysisPerformed,
    CADImageLibrary,
    CADProcessingAndFindingsSummary,
    CompositeFeature,
    DetectionPerformed,
    ImageLibraryEntry,
    IndividualImpressionRecommendation,
    MammographyCADReport,
    SingleImageFinding,
    SummaryOfAnalyses,
    SummaryOfDetections,
)
from cad.report.sr.sop import MammographyCADSR
from cad.result.model import BOX_DIGITS, SCORE_DIGITS, Finding, ImageStatus, StudyResult

#: Algorithm Parameters are "key=value" texts; these keys are read back by the reader.
PARAMETER_KEYS = ("model_name", "model_sha256", "settings_sha256", "operating_threshold", "runtime_variant", "released",
                  "completeness")
REASON_KEY = "not_analysed_reason"
#: Algorithm Parameter of a composite feature linked by the learned correspondence
LINK_PROBABILITY_KEY = "link_probability"
#: Type 2 attributes highdicom copies from the evidence; empty when an input lacks them.
TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
                 "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")


def algorithm_parameters(findings: StudyResult) -> list[str]:
    alg = findings.algorithm
    values = {
        "model_name": alg.model_name,
        "model_sha256": alg.model_sha256,
        "settings_sha256": alg.settings_sha256,
        "operating_threshold": f"{findings.operating_threshold:.6f}",
        "runtime_variant": alg.runtime_variant,
        # only an unreleased model (development mode, RC-002) says so; released results keep their bytes
        "released": None if alg.released else "false",
        # per breast against the 4-view screening protocol (RC-030): "R: analysed (CC, MLO); L: absent (...)"
        "completeness": "; ".join(b.describe() for b in findings.breasts),
    }
    return [f"{key}={values[key]}" for key in PARAMETER_KEYS if values[key] is not None]


def _evidence(header: Dataset) -> Dataset:
    ds = copy.copy(header)
    for keyword in TYPE2_COPIED:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _view(status: ImageStatus) -> View | None:
    try:
        return View(status.view) if status.view else None
    except ValueError:
        return None


#: every finding the SR carries is a CAD mark, which a workstation must present
PRESENTATION = sr.RenderingIntent.PRESENTATION_REQUIRED


def _collocation(analysed: Sequence[ImageStatus]) -> tuple[list[ImageStatus], list[tuple[ImageStatus, str]]]:
    """Images CC/MLO linking used (breasts with both views analysed), and those it could not,
    with why: their breast has no analysed image of the other view."""
    used: list[ImageStatus] = []
    unused: list[tuple[ImageStatus, str]] = []
    for side in ("R", "L"):
        images = [s for s in analysed if s.laterality == side]
        views = {s.view for s in images}
        if {"CC", "MLO"} <= views:
            used += images
        else:
            missing = ({"CC", "MLO"} - views).pop()
            unused += [(s, f"no analysed {missing} view of this breast to link with") for s in images]
    return used, unused


def _box(box: Sequence[float]) -> tuple[float, ...]:
    """The box as findings.json writes it, so both serialisations hold the same numbers."""
    return tuple(round(float(c), BOX_DIGITS) for c in box)


def _finding_content(
    finding: Finding, algorithm: AlgorithmIdentification, library: CADImageLibrary,
) -> CompositeFeature | SingleImageFinding:
    intent = PRESENTATION
    if finding.linked:
        singles = [
            SingleImageFinding(_box(v.box), v.score, intent, algorithm, library.path_of(v.sop_instance_uid), INFERRED_FROM)
            for v in finding.views
        ]
        # a link by the learned correspondence states how probable it is that both views show one
        # lesion, as an Algorithm Parameter of the composite feature (no TID 4005 concept says it)
        feature_algorithm = algorithm if finding.link_probability is None else AlgorithmIdentification(
            *algorithm.identity, [f"{LINK_PROBABILITY_KEY}={finding.link_probability:.{SCORE_DIGITS}f}"])
        return CompositeFeature(singles, finding.score, intent, feature_algorithm, finding.finding_id)
    (view,) = finding.views
    return SingleImageFinding(_box(view.box), finding.score, intent, algorithm, library.path_of(view.sop_instance_uid),
                              CONTAINS, tracking_identifier=finding.finding_id)


def build_mammography_cad_sr(
    findings: StudyResult, image_headers: Sequence[Dataset], failed_headers: Sequence[Dataset],
    uids: dict[str, str], previous_versions: Sequence[Dataset] = (),
) -> MammographyCADSR:
    """The Mammography CAD SR for one study.

    ``image_headers`` are the decoded images (analysed or refused later, e.g. no breast found),
    ``failed_headers`` the inputs that failed ingest but name a SOP instance; the status of each
    comes from ``findings.images``. ``previous_versions`` are earlier CAD SRs of the study that
    this one supersedes (the study gained images): they go into the Predecessor Documents
    Sequence.
    """
    status_of = {i.sop_instance_uid: i for i in findings.images if i.sop_instance_uid}
    headers: dict[str, Dataset] = {}
    # a failed input can be referenced only with the identity an SR reference needs; one without
    # it (an invalid file missing its series or SOP class) stays listed in findings.json alone
    referable = [h for h in failed_headers if h.get("SeriesInstanceUID") and h.get("SOPClassUID")]
    for header in [*image_headers, *referable]:
        headers.setdefault(str(header.SOPInstanceUID), header)
    listed = [status_of[uid] for uid in status_of if uid in headers]
    if not listed:
        raise ValueError(f"study {findings.study_instance_uid}: no identifiable image to report on")
    entries = [ImageLibraryEntry(headers[s.sop_instance_uid], s.laterality.value if s.laterality else None,  # type: ignore[index]
                                 _view(s))
               for s in listed]
    library = CADImageLibrary(entries, MammographyCADReport.IMAGE_LIBRARY_PATH)
    parameters = algorithm_parameters(findings)
    algorithm = AlgorithmIdentification(findings.algorithm.name, findings.algorithm.version, parameters)
    # on each finding, name and version only (TID 4019 rows that are mandatory): the model hash
    # and operating point are stated once per run, on the Detection Performed items
    finding_algorithm = AlgorithmIdentification(findings.algorithm.name, findings.algorithm.version)

    analysed = [s for s in listed if s.analysed]
    failed = [s for s in listed if not s.analysed]
    successful_detections = (
        [DetectionPerformed(algorithm, [library.path_of(s.sop_instance_uid) for s in analysed])]  # type: ignore[arg-type]
        if analysed else []
    )
    failed_detections = [
        DetectionPerformed(
            AlgorithmIdentification(findings.algorithm.name, findings.algorithm.version,
                                    [*parameters, f"{REASON_KEY}={s.reason or 'unknown'}"]),
            [library.path_of(s.sop_instance_uid)],  # type: ignore[arg-type]
        )
        for s in failed
    ]
    linked_ok, linked_failed = _collocation(analysed)
    successful_analyses = (
        [AnalysisPerformed(algorithm, [library.path_of(s.sop_instance_uid) for s in linked_ok])]  # type: ignore[arg-type]
        if linked_ok else []
    )
    failed_analyses = [
        AnalysisPerformed(
            AlgorithmIdentification(findings.algorithm.name, findings.algorithm.version,
                                    [*parameters, f"{REASON_KEY}={reason}"]),
            [library.path_of(s.sop_instance_uid)],  # type: ignore[arg-type]
        )
        for s, reason in linked_failed
    ]
    impressions = [
        IndividualImpressionRecommendation(_finding_content(f, finding_algorithm, library), PRESENTATION)
        for f in findings.marks
    ]
    # "with findings" means the document reports findings (PS3.16 TID 4001); which of them a
    # workstation shows is each finding's Rendering Intent.
    # an examination without both breasts analysed on CC and MLO is not a complete CAD result
    # (RC-030): "not all algorithms succeeded", never "all succeeded without findings"
    summary = sr.ProcessingSummary.of(any_failed=bool(failed or linked_failed or not findings.exam_complete),
                                      any_succeeded=bool(analysed), with_findings=bool(impressions))
    report = MammographyCADReport(
        library,
        CADProcessingAndFindingsSummary(summary, impressions),
        SummaryOfDetections(successful_detections, failed_detections),
        SummaryOfAnalyses(successful_analyses, failed_analyses),
    )
    evidence = [_evidence(headers[s.sop_instance_uid]) for s in listed]  # type: ignore[index]
    not_images = sorted({str(h.get("SOPClassUID", "")) or "(none)" for h in evidence if not is_image_object(h)})
    if not_images:  # an IMAGE content item must reference an image (a defect upstream, never written)
        raise ValueError(f"study {findings.study_instance_uid}: evidence that is not an image object "
                         f"(SOP class {', '.join(not_images)}) cannot be referenced as an image")
    return MammographyCADSR(
        evidence=evidence,
        content=report,
        series_instance_uid=uids["sr_series"],
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids["sr_instance"],
        instance_number=1,
        manufacturer=DEVICE.manufacturer,
        manufacturer_model_name=DEVICE.model_name,
        software_versions=DEVICE.software_versions,
        device_serial_number=DEVICE.device_serial_number,
        series_description="CAD mass detection (Mammography CAD SR)",
        is_final=True,
        previous_versions=list(previous_versions) or None,
    )
