"""One study through the locked core: per-view detection, CC/MLO linking, findings.

Every input image ends up in the study's image list, analysed or not analysed with the reason;
an image that fails here (for example no breast found) never stops the rest of the study.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

import cad
from cad.analysis.location import locate, view_position
from cad.detect import rescore
from cad.detect.correspondence import CorrespondenceModel, ViewCandidate, assign, pair_probabilities, view_candidates
from cad.detect.inputs import ViewInput, prepare_view
from cad.detect.linking import Candidate, LinkingConfig, candidates, fuse, link
from cad.detect.locked import LockedModel
from cad.detect.postprocess import ViewDetections
from cad.detect.release import is_released
from cad.detect.runtime import Runtime, default_threads
from cad.io.image import IngestFailure, Laterality, MammogramImage, Study, View
from cad.preprocess.geometry import OrientationMismatchError
from cad.preprocess.mask import NoBreastError
from cad.result.model import (
    ANALYZED,
    FINDING_TYPE,
    NOT_ANALYZED,
    SCORE_DIGITS,
    Algorithm,
    Finding,
    FindingView,
    ImageStatus,
    StudyResult,
    image_sort_key,
)
from cad.stages import NO_CLOCK, Stage, StageClock

log = logging.getLogger(__name__)


class Scored(NamedTuple):
    """A finding before numbering: its raw combined score (clipped to [0, 1] when numbered)."""

    score: float
    laterality: Laterality
    views: tuple[FindingView, ...]
    link_cost: float | None = None
    #: a link by the learned correspondence: the probability that both views show one lesion
    link_probability: float | None = None


@dataclass(frozen=True)
class AnalysedView:
    image: MammogramImage
    view_input: ViewInput
    detections: ViewDetections


def _failure_status(failure: IngestFailure) -> ImageStatus:
    ref = failure.ref
    return ImageStatus(ref.sop_instance_uid, ref.laterality, ref.view, NOT_ANALYZED, failure.message, ref.path.name,
                       failure.code.value)


def algorithm_of(model: LockedModel, runtime: Runtime | None = None) -> Algorithm:
    return Algorithm(cad.ALGORITHM_NAME, cad.__version__, model.sha256, model.name, model.settings_sha256,
                     runtime.variant if runtime is not None else None,
                     is_released(model.sha256, model.settings_sha256))


def _prepare(image: MammogramImage, model: LockedModel) -> ViewInput | str:
    """One image's model input, or why it cannot be analysed (an unexpected exception is an
    internal error, logged with its traceback, never a clinical statement)."""
    try:
        return prepare_view(image, model.config)
    except NoBreastError as exc:
        reason = f"breast region could not be found ({exc})"
        log.warning("not analysed: %s: %s", image.path.name, reason)
    except OrientationMismatchError as exc:
        reason = str(exc)
        log.warning("not analysed: %s: %s", image.path.name, reason)
    except Exception as exc:
        reason = f"internal error ({type(exc).__name__}); the traceback is in the log"
        log.error("not analysed: %s: %s", image.path.name, reason, exc_info=True)
    return reason


_POOL: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    global _POOL
    _POOL = None  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def _pool() -> ThreadPoolExecutor:
    """The threads that prepare views: one per CPU the runtime may use (numpy and scipy release
    the GIL in the heavy steps, so views are prepared in parallel; the result of each view does
    not depend on which thread prepared it)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=default_threads(), thread_name_prefix="cad-prepare")
    return _POOL


def detect_views(
    model: LockedModel, images: list[MammogramImage], runtime: Runtime,
    clock: StageClock = NO_CLOCK,
) -> tuple[list[AnalysedView], list[ImageStatus]]:
    """Prepare every image (in parallel, :func:`_pool`), then run the prepared views together on
    ``runtime``; images that cannot be prepared are returned as not analysed."""
    prepared: list[tuple[MammogramImage, ViewInput]] = []
    refused: list[ImageStatus] = []
    with clock.stage(Stage.PREPROCESS):
        outcomes = list(_pool().map(lambda image: _prepare(image, model), images)) if len(images) > 1 \
            else [_prepare(image, model) for image in images]
        for image, outcome in zip(images, outcomes):
            if isinstance(outcome, ViewInput):
                prepared.append((image, outcome))
            else:
                refused.append(ImageStatus(image.sop_instance_uid, image.laterality, image.view, NOT_ANALYZED, outcome,
                                           image.path.name))
    inputs = [view_input for _, view_input in prepared]
    with clock.stage(Stage.MODEL):
        detections = runtime.detect(inputs)
    analysed = [AnalysedView(image, view_input, found)
                for (image, view_input), found in zip(prepared, detections)]
    return analysed, refused


@dataclass(frozen=True)
class RescoredBreast:
    """One breast's candidates after the second stage: its inputs, the single- and dual-view
    probabilities of every row, and the rows kept by per-view non-maximum suppression."""

    inputs: rescore.BreastInputs
    single: np.ndarray
    dual: np.ndarray
    rows: list[int]


def rescore_breast(views: list[AnalysedView], model: LockedModel, runtime: Runtime) -> RescoredBreast:
    """Candidates of both sources rescored with both views; per view, those scoring at least
    the floor survive non-maximum suppression on the dual-view score, at most the detector's
    per-view limit."""
    settings = model.rescore_settings
    assert settings is not None
    inputs = rescore.breast_inputs([(v.view_input, v.image.view, v.detections) for v in views], settings.blobs)
    if len(inputs) == 0:
        return RescoredBreast(inputs, np.zeros(0), np.zeros(0), [])
    single_logit, dual_logit = runtime.rescore(inputs)
    single, dual = rescore.sigmoid(single_logit), rescore.sigmoid(dual_logit)
    rows: list[int] = []
    for position in range(len(inputs.views)):
        members = np.flatnonzero(inputs.view_of == position)
        mine = members[dual[members] >= model.config.score_floor]
        if not len(mine):
            continue
        boxes = inputs.found[position].model_boxes[mine - members[0]]
        rows += [int(mine[k]) for k in rescore.suppress(boxes, dual[mine], settings.nms_iou,
                                                          model.config.max_detections_per_view)]
    return RescoredBreast(inputs, single, dual, sorted(rows))


def _rescored_findings(
    laterality: Laterality, views: list[AnalysedView], rescored: RescoredBreast, model: LockedModel
) -> list[Scored]:
    """Findings of one rescored breast: linking on the dual-view scores, each finding scored by
    its dual-view score(s); each view's own ``score`` is its single-view score."""
    settings = model.rescore_settings
    assert settings is not None
    inputs, single, dual, rows = rescored.inputs, rescored.single, rescored.dual, rescored.rows
    cc_rows = [r for r in rows if inputs.kinds[inputs.view_of[r]] is View.CC]
    mlo_rows = [r for r in rows if inputs.kinds[inputs.view_of[r]] is View.MLO]

    def linking(selected: list[int]) -> list[Candidate]:
        return [replace(inputs.linking[r], index=k, score=float(dual[r])) for k, r in enumerate(selected)]

    links = link(linking(cc_rows), linking(mlo_rows), model.linking)

    def fview(row: int) -> FindingView:
        position = int(inputs.view_of[row])
        view = views[inputs.views[position]]
        first = int(np.searchsorted(inputs.view_of, position))  # rows are grouped by view
        box = tuple(float(c) for c in inputs.found[position].boxes[row - first])
        return FindingView(view.image.sop_instance_uid, view.image.view, box,  # type: ignore[arg-type]
                           round(float(single[row]), SCORE_DIGITS))

    out: list[Scored] = []
    for l in links:
        a, b = cc_rows[l.cc], mlo_rows[l.mlo]
        score = settings.combine(float(dual[a]), float(dual[b]))
        out.append(Scored(score, laterality, (fview(a), fview(b)), l.cost))
    linked = {cc_rows[l.cc] for l in links} | {mlo_rows[l.mlo] for l in links}
    for row in rows:
        if row not in linked:
            out.append(Scored(float(dual[row]), laterality, (fview(row),)))
    return out


def _breast_findings(
    laterality: Laterality, views: list[AnalysedView], config: LinkingConfig
) -> list[Scored]:
    cc_views = [v for v in views if v.image.view is View.CC]
    mlo_views = [v for v in views if v.image.view is View.MLO]

    def flat(group: list[AnalysedView]) -> list[tuple[AnalysedView, int]]:
        return [(v, k) for v in group for k in range(len(v.detections))]

    def features(group: list[AnalysedView]) -> list[Candidate]:
        out: list[Candidate] = []
        for v in group:
            d = v.detections
            out += candidates(v.view_input, v.image.view, d.boxes, d.model_boxes, d.scores, len(out))
        return out

    cc_flat, mlo_flat = flat(cc_views), flat(mlo_views)
    links = link(features(cc_views), features(mlo_views), config)
    linked_cc = {l.cc for l in links}
    linked_mlo = {l.mlo for l in links}

    def fview(entry: tuple[AnalysedView, int]) -> FindingView:
        v, k = entry
        box = tuple(float(c) for c in v.detections.boxes[k])
        score = round(float(v.detections.scores[k]), SCORE_DIGITS)
        return FindingView(v.image.sop_instance_uid, v.image.view, box, score)  # type: ignore[arg-type]

    out: list[Scored] = []
    for l in links:
        a, b = fview(cc_flat[l.cc]), fview(mlo_flat[l.mlo])
        score = fuse(a.score, b.score, l.confidence)
        out.append(Scored(score, laterality, (a, b), l.cost))
    for flat_list, linked in ((cc_flat, linked_cc), (mlo_flat, linked_mlo)):
        for k, entry in enumerate(flat_list):
            if k not in linked:
                fv = fview(entry)
                out.append(Scored(fv.score, laterality, (fv,)))
    return out


def _corresponded_findings(laterality: Laterality, views: list[AnalysedView],
                           model: CorrespondenceModel) -> list[Scored]:
    """Findings of one breast with the learned correspondence: linking by assignment over the
    pair probabilities, and every detection scored with the other view's evidence (its best
    counterpart's probability) when the breast's other view was analysed."""
    cc_views = [v for v in views if v.image.view is View.CC]
    mlo_views = [v for v in views if v.image.view is View.MLO]

    def gather(group: list[AnalysedView], view: View) -> list[tuple[AnalysedView, ViewCandidate]]:
        out: list[tuple[AnalysedView, ViewCandidate]] = []
        for v in group:
            out += [(v, c) for c in view_candidates(v.view_input, view, v.detections, model.min_score, model.per_view,
                                                    len(out))]
        return out

    cc, mlo = gather(cc_views, View.CC), gather(mlo_views, View.MLO)
    p = pair_probabilities([c for _, c in cc], [m for _, m in mlo], model)
    links = assign(p, model)
    both = bool(cc_views) and bool(mlo_views)
    best: dict[tuple[str, int], float] = {}  # (SOP instance, detection) -> best counterpart probability
    for group, axis in ((cc, 1), (mlo, 0)):
        for k, (v, c) in enumerate(group):
            line = p[k, :] if axis == 1 else p[:, k]
            best[(v.image.sop_instance_uid, c.detection)] = float(line.max()) if line.size else 0.0

    def fview(v: AnalysedView, k: int) -> FindingView:
        box = tuple(float(c) for c in v.detections.boxes[k])
        return FindingView(v.image.sop_instance_uid, v.image.view, box,  # type: ignore[arg-type]
                           round(float(v.detections.scores[k]), SCORE_DIGITS))

    def dual(v: AnalysedView, k: int, counterpart: float | None = None) -> float:
        own = float(v.detections.scores[k])
        if not both:  # no other view to ask: the detection's own score
            return own
        found = best.get((v.image.sop_instance_uid, k), 0.0) if counterpart is None else counterpart
        return model.dual_score(own, found)

    out: list[Scored] = []
    linked: set[tuple[str, int]] = set()
    for i, j in links:
        (a, ca), (b, cb) = cc[i], mlo[j]
        probability = float(p[i, j])
        if model.dual_view is None:  # the two views' own scores, fused by a noisy-OR weighted by the link
            score = fuse(float(a.detections.scores[ca.detection]), float(b.detections.scores[cb.detection]),
                         probability)
        else:
            score = max(dual(a, ca.detection, probability), dual(b, cb.detection, probability))
        out.append(Scored(score, laterality, (fview(a, ca.detection), fview(b, cb.detection)), None,
                          round(probability, SCORE_DIGITS)))
        linked |= {(a.image.sop_instance_uid, ca.detection), (b.image.sop_instance_uid, cb.detection)}
    for v in views:
        for k in range(len(v.detections)):
            if (v.image.sop_instance_uid, k) not in linked:
                out.append(Scored(dual(v, k), laterality, (fview(v, k),)))
    return out


def analyse_study(
    study: Study, model: LockedModel, runtime: Runtime, clock: StageClock = NO_CLOCK
) -> tuple[StudyResult, list[AnalysedView]]:
    """Findings for one study, and the analysed views (for overlays)."""
    return analyse_studies([study], model, runtime, clock)[0]


def analyse_studies(
    studies: list[Study], model: LockedModel, runtime: Runtime, clock: StageClock = NO_CLOCK
) -> list[tuple[StudyResult, list[AnalysedView]]]:
    """Findings for several studies whose views go to the runtime together, so that views of
    equal shape from different exams share batches; linking stays per study and breast."""
    analysed, refused = detect_views(model, [image for study in studies for image in study.images],
                                     runtime, clock)
    rescored: dict[tuple[str, Laterality], RescoredBreast] = {}
    if model.rescore_settings is not None:
        with clock.stage(Stage.RESCORE):
            for study in studies:
                for laterality in (Laterality.RIGHT, Laterality.LEFT):
                    views = [v for v in analysed if v.image.study_instance_uid == study.study_instance_uid
                             and v.image.laterality is laterality]
                    rescored[(study.study_instance_uid, laterality)] = rescore_breast(views, model, runtime)
    results = []
    with clock.stage(Stage.LINKING):
        for study in studies:
            uid = study.study_instance_uid
            members = {image.sop_instance_uid for image in study.images}
            views = [v for v in analysed if v.image.study_instance_uid == uid]
            failed = [r for r in refused if r.sop_instance_uid in members]
            results.append((_study_findings(study, model, views, failed, rescored, runtime), views))
    return results


def _study_findings(
    study: Study, model: LockedModel, analysed: list[AnalysedView], refused: list[ImageStatus],
    rescored: dict[tuple[str, Laterality], RescoredBreast] | None = None, runtime: Runtime | None = None,
) -> StudyResult:
    """Per-breast linking and fusion of one study's detections, and every image's status."""
    config = model.linking
    statuses = [ImageStatus(v.image.sop_instance_uid, v.image.laterality, v.image.view, ANALYZED, None,
                            v.image.path.name) for v in analysed]
    statuses += refused + [_failure_status(f) for f in study.failures]
    scored: list[Scored] = []
    for laterality in (Laterality.RIGHT, Laterality.LEFT):
        views = [v for v in analysed if v.image.laterality is laterality]
        if model.rescore_settings is not None:
            breast = (rescored or {})[(study.study_instance_uid, laterality)]
            scored += _rescored_findings(laterality, views, breast, model)
        elif model.manifest.correspondence is not None:
            scored += _corresponded_findings(laterality, views, model.manifest.correspondence)
        else:
            scored += _breast_findings(laterality, views, config)
    scored.sort(key=lambda t: (-round(t.score, 6), t.laterality, t.views[0].view, t.views[0].box))
    geometry = {v.image.sop_instance_uid: v.view_input.geometry for v in analysed}
    findings = tuple(
        Finding(f"F{n:03d}", f.laterality, FINDING_TYPE, round(float(np.clip(f.score, 0.0, 1.0)), SCORE_DIGITS),
                f.views, f.link_cost, f.link_probability,
                locate(f.laterality, [view_position(geometry[v.sop_instance_uid], v.view, v.box) for v in f.views]))
        for n, f in enumerate(scored, start=1))
    return StudyResult(study.study_instance_uid, algorithm_of(model, runtime), model.operating_threshold,
                       tuple(sorted(statuses, key=image_sort_key)), findings)
