"""The data of the learned CC/MLO correspondence (issue 28): every pair of candidates of a
breast, from the locked detector run on phantom exams, with its features and whether both are
the same lesion.

A candidate is a detection of the locked first stage (the strongest ``per_view`` of a view
scoring at least ``min_score``); it hits a lesion when its centre lies inside the lesion's box on
that view (the criterion of `cad evaluate`). A pair is positive when both candidates hit the same
lesion. The pair features are :func:`cad.detect.correspondence.pair_features` (the device's
own code), so what is learned here is what runs at a site.

``python -m cad_tools.training.correspondence collect PHANTOMS... --out pairs.npz`` writes the
table; the fitting and the linking evaluation are in :mod:`cad_tools.training.correspondence_fit`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cad.analysis.pipeline import AnalysedView, detect_views
from cad.detect.correspondence import FEATURES, pair_features, view_candidates
from cad.detect.locked import LockedModel, load_locked_model
from cad.detect.runtime import Runtime, make_runtime
from cad.io import load
from cad.io.image import Laterality, View


@dataclass
class PairTable:
    """Pairs of one or more phantom sets: features, labels and where each pair comes from."""

    features: np.ndarray  # (pairs, len(FEATURES))
    same: np.ndarray  # (pairs,) 1 when both candidates hit the same lesion
    breast: np.ndarray  # (pairs,) index of the breast (exam, laterality) the pair belongs to
    cc: np.ndarray  # (pairs,) candidate index within its breast's CC candidates
    mlo: np.ndarray  # (pairs,) candidate index within its breast's MLO candidates
    cc_score: np.ndarray
    mlo_score: np.ndarray
    cc_lesion: np.ndarray  # lesion id hit by the CC candidate ("" for a false mark)
    mlo_lesion: np.ndarray
    #: per breast: "<set>/<study uid>/<laterality>", and its lesions seen on both views
    breasts: list[str]
    lesions_both: list[list[str]]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, features=self.features, same=self.same, breast=self.breast, cc=self.cc,
                            mlo=self.mlo, cc_score=self.cc_score, mlo_score=self.mlo_score, cc_lesion=self.cc_lesion,
                            mlo_lesion=self.mlo_lesion, breasts=np.array(self.breasts),
                            lesions_both=np.array([json.dumps(x) for x in self.lesions_both]),
                            feature_names=np.array(FEATURES))

    @classmethod
    def load(cls, path: Path) -> PairTable:
        data = np.load(path)
        if list(data["feature_names"]) != list(FEATURES):
            raise ValueError(f"{path}: pairs made with other features ({list(data['feature_names'])})")
        return cls(data["features"], data["same"], data["breast"], data["cc"], data["mlo"], data["cc_score"],
                   data["mlo_score"], data["cc_lesion"], data["mlo_lesion"], [str(b) for b in data["breasts"]],
                   [json.loads(str(x)) for x in data["lesions_both"]])


def _hits(truth_exam: dict[str, Any]) -> dict[str, list[tuple[str, list[float]]]]:
    """Per SOP Instance UID: the (lesion id, box) of every mass seen on it."""
    out: dict[str, list[tuple[str, list[float]]]] = {}
    for lesion in truth_exam["lesions"]:
        if lesion["type"] != "mass":
            continue
        for view in lesion["views"]:
            out.setdefault(view["sop_instance_uid"], []).append((lesion["lesion_id"], view["box"]))
    return out


def _lesion_of(box: np.ndarray, lesions: list[tuple[str, list[float]]]) -> str:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    for lesion_id, (x0, y0, x1, y1) in lesions:
        if x0 <= cx <= x1 and y0 <= cy <= y1:
            return str(lesion_id)
    return ""


def collect(sets: list[Path], model: LockedModel, runtime: Runtime, min_score: float = 0.02,
            per_view: int = 20) -> PairTable:
    """The pair table of every breast with an analysed CC and MLO view in ``sets``."""
    rows: dict[str, list[Any]] = {k: [] for k in ("features", "same", "breast", "cc", "mlo", "cc_score", "mlo_score",
                                                  "cc_lesion", "mlo_lesion")}
    breasts: list[str] = []
    lesions_both: list[list[str]] = []
    for folder in sets:
        truth = {e["study_instance_uid"]: e for e in json.loads((folder / "truth.json").read_text())["exams"]}
        for study in load([folder]).studies:
            analysed, _ = detect_views(model, study.images, runtime)
            hits = _hits(truth[study.study_instance_uid])
            for laterality in (Laterality.RIGHT, Laterality.LEFT):
                views = [v for v in analysed if v.image.laterality is laterality]
                cc = [v for v in views if v.image.view is View.CC]
                mlo = [v for v in views if v.image.view is View.MLO]
                if len(cc) != 1 or len(mlo) != 1:
                    continue
                _add_breast(rows, breasts, lesions_both, f"{folder.name}/{study.study_instance_uid}/{laterality.value}",
                            cc[0], mlo[0], hits, min_score, per_view)
    return PairTable(np.array(rows["features"], dtype=np.float64).reshape(-1, len(FEATURES)),
                     np.array(rows["same"], dtype=np.int8), np.array(rows["breast"], dtype=np.int32),
                     np.array(rows["cc"], dtype=np.int32), np.array(rows["mlo"], dtype=np.int32),
                     np.array(rows["cc_score"]), np.array(rows["mlo_score"]), np.array(rows["cc_lesion"]),
                     np.array(rows["mlo_lesion"]), breasts, lesions_both)


def _add_breast(rows: dict[str, list[Any]], breasts: list[str], lesions_both: list[list[str]], name: str,
                cc: AnalysedView, mlo: AnalysedView, hits: dict[str, list[tuple[str, list[float]]]], min_score: float,
                per_view: int) -> None:
    cc_candidates = view_candidates(cc.view_input, View.CC, cc.detections, min_score, per_view)
    mlo_candidates = view_candidates(mlo.view_input, View.MLO, mlo.detections, min_score, per_view)
    cc_lesions = [_lesion_of(c.box, hits.get(cc.image.sop_instance_uid, [])) for c in cc_candidates]
    mlo_lesions = [_lesion_of(m.box, hits.get(mlo.image.sop_instance_uid, [])) for m in mlo_candidates]
    index = len(breasts)
    breasts.append(name)
    on_cc = {lid for lid, _ in hits.get(cc.image.sop_instance_uid, [])}
    lesions_both.append(sorted(on_cc & {lid for lid, _ in hits.get(mlo.image.sop_instance_uid, [])}))
    for i, c in enumerate(cc_candidates):
        for j, m in enumerate(mlo_candidates):
            rows["features"].append(pair_features(c, m))
            rows["same"].append(int(bool(cc_lesions[i]) and cc_lesions[i] == mlo_lesions[j]))
            rows["breast"].append(index)
            rows["cc"].append(i)
            rows["mlo"].append(j)
            rows["cc_score"].append(c.score)
            rows["mlo_score"].append(m.score)
            rows["cc_lesion"].append(cc_lesions[i])
            rows["mlo_lesion"].append(mlo_lesions[j])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", type=Path, help="phantom sets (folders with truth.json)")
    parser.add_argument("--out", type=Path, required=True, help="pairs.npz to write")
    parser.add_argument("--model", type=Path, default=None, help="locked model (default: the released one)")
    parser.add_argument("--min-score", type=float, default=0.02)
    parser.add_argument("--per-view", type=int, default=20)
    args = parser.parse_args(argv)
    model = load_locked_model(args.model)
    table = collect(args.sets, model, make_runtime(model), args.min_score, args.per_view)
    table.save(args.out)
    print(f"{len(table.same)} pairs ({int(table.same.sum())} same lesion) from {len(table.breasts)} breasts: {args.out}")


if __name__ == "__main__":
    main()
