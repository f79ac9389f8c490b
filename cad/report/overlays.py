"""Per-view overlay PNGs of a study's CAD marks (findings at or above the operating point)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cad.analysis.pipeline import AnalysedView
from cad.report.overlay_drawing import Mark, overlay_name, render_overlay
from cad.result.model import StudyResult, shown_score

LINKED = (0, 210, 255)
SINGLE = (255, 150, 0)


def completeness(findings: StudyResult) -> tuple[str, bool]:
    """The exam line every overlay carries (RC-030), and whether it is a warning."""
    if findings.exam_complete:
        return "Exam complete: both breasts analysed on CC and MLO", False
    return "Exam INCOMPLETE, no CAD result for: " + "; ".join(
        b.describe() for b in findings.breasts if b.views_missing), True


def write_overlays(findings: StudyResult, views: Sequence[AnalysedView], folder: Path) -> list[Path]:
    """One PNG per analysed view: outline, nipple, pectoral line, CAD marks with score and link."""
    written = []
    for v in views:
        uid = v.image.sop_instance_uid
        marks = []
        for f in findings.marks:
            for fv in f.views:
                if fv.sop_instance_uid != uid:
                    continue
                other = [o.view.value for o in f.views if o.sop_instance_uid != uid]
                link = f" + {other[0]}" if other else " (this view only)"
                if f.link_probability is not None:  # how sure the learned correspondence is of the link
                    link += f" (link {shown_score(f.link_probability)})"
                if f.location is not None:  # where it is (SRS-LNK-005)
                    link += f": {f.location.label()}"
                marks.append(Mark(fv.box, f"{f.finding_id} {shown_score(f.score)}{link}", LINKED if other else SINGLE))
        title = (f"{v.image.laterality.value} {v.image.view.value}   CAD marks: {len(marks)}   "
                 f"(score >= {shown_score(findings.operating_threshold)}; blue = linked CC/MLO, orange = one view)")
        written.append(render_overlay(v.image, v.view_input.geometry, marks,
                                      folder / overlay_name(v.image.laterality.value, v.image.view.value, uid), title,
                                      completeness(findings)))
    return written
