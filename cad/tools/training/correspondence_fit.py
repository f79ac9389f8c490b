"""Fit the learned CC/MLO correspondence (a logistic regression over
:data:`cad.detect.correspondence.FEATURES`) on training pairs, and judge linking on validation
pairs: pair AUC, and link recall and precision after the assignment at each minimum probability.

``python -m cad.tools.training.correspondence_fit --train T.npz [T2.npz...] --validation V.npz
--out fit.json`` writes the fitted model (the manifest's ``linking.correspondence``) and the
validation table; nothing here reads test data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from cad.detect.correspondence import FEATURES, CorrespondenceModel, ProbableLink
from cad.tools.training.correspondence import PairTable


def fit(tables: list[PairTable], l2: float = 1.0, min_probability: float = 0.5) -> CorrespondenceModel:
    """Maximum-likelihood logistic regression with an L2 penalty on standardised features;
    positives are weighted up to balance the (rare) same-lesion pairs."""
    x = np.concatenate([t.features for t in tables])
    y = np.concatenate([t.same for t in tables]).astype(np.float64)
    centre, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - centre) / scale
    weight = np.where(y == 1, (len(y) - y.sum()) / max(1.0, y.sum()), 1.0)
    weight /= weight.mean()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        margin = z @ w + b
        p = 1.0 / (1.0 + np.exp(-margin))
        nll = weight * (np.logaddexp(0.0, margin) - y * margin)
        grad = weight * (p - y)
        return (float(nll.mean() + 0.5 * l2 * w @ w / len(y)),
                np.append(z.T @ grad / len(y) + l2 * w / len(y), grad.mean()))

    result = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B")
    return CorrespondenceModel(tuple(float(v) for v in result.x[:-1]), float(result.x[-1]),
                               tuple(float(v) for v in centre), tuple(float(v) for v in scale), min_probability)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)) if n_pos and n_neg else float("nan")


def links_of(table: PairTable, probability: np.ndarray, min_probability: float) -> list[tuple[int, ProbableLink]]:
    """The assignment of every breast at ``min_probability``: (breast, link)."""
    from scipy.optimize import linear_sum_assignment

    out = []
    floor = np.log(min_probability / (1 - min_probability))
    for b in np.unique(table.breast):
        rows = np.flatnonzero(table.breast == b)
        n, m = int(table.cc[rows].max()) + 1, int(table.mlo[rows].max()) + 1
        p = np.zeros((n, m))
        p[table.cc[rows], table.mlo[rows]] = probability[rows]
        allowed = p >= min_probability
        gain = np.log(np.clip(p, 1e-9, 1 - 1e-9) / np.clip(1 - p, 1e-9, 1)) - floor
        cost = np.zeros((n + m, m + n))
        cost[:n, :m] = np.where(allowed, -gain, 1e6)
        cost[:n, m:] = np.where(np.eye(n, dtype=bool), 0.0, 1e6)
        cost[n:, :m] = np.where(np.eye(m, dtype=bool), 0.0, 1e6)
        r, c = linear_sum_assignment(cost)
        out += [(int(b), ProbableLink(int(i), int(j), float(p[i, j]))) for i, j in zip(r, c)
                if i < n and j < m and allowed[i, j]]
    return out


def judge(table: PairTable, probability: np.ndarray, min_probability: float, mark_score: float) -> dict[str, Any]:
    """Link recall (lesions whose CC and MLO candidates both score at least ``mark_score`` and
    are linked to each other) and precision (of links whose stronger candidate scores at least
    ``mark_score``: those joining one lesion's two views; wrong: a lesion and a false mark or
    another lesion; false pairs: two false marks)."""
    index = {(int(b), int(i), int(j)): k for k, (b, i, j) in enumerate(zip(table.breast, table.cc, table.mlo))}
    links = links_of(table, probability, min_probability)
    linked = set()
    right = wrong = false_pairs = 0
    for b, l in links:
        k = index[(b, l.cc, l.mlo)]
        if max(table.cc_score[k], table.mlo_score[k]) < mark_score:
            continue
        a, c = str(table.cc_lesion[k]), str(table.mlo_lesion[k])
        if a and a == c:
            right += 1
            linked.add((b, a))
        elif a or c:
            wrong += 1
        else:
            false_pairs += 1
    found_both = set()
    for k in range(len(table.same)):
        a, c = str(table.cc_lesion[k]), str(table.mlo_lesion[k])
        if a and a == c and table.cc_score[k] >= mark_score and table.mlo_score[k] >= mark_score:
            found_both.add((int(table.breast[k]), a))
    total = right + wrong + false_pairs
    return {"min_probability": min_probability, "links": total, "one_lesion": right, "wrong": wrong,
            "two_false_marks": false_pairs, "precision": round(right / total, 4) if total else None,
            "lesions_found_in_both": len(found_both), "linked": len(found_both & linked),
            "recall": round(len(found_both & linked) / len(found_both), 4) if found_both else None,
            "breasts": len(table.breasts)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="+", type=Path, required=True)
    parser.add_argument("--validation", nargs="+", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--mark-score", type=float, default=0.116, help="the operating threshold links are judged at")
    args = parser.parse_args(argv)
    model = fit([PairTable.load(p) for p in args.train], args.l2)
    report: dict[str, Any] = {"model": model.to_dict(), "validation": {}}
    for path in args.validation:
        table = PairTable.load(path)
        p = model.probabilities(table.features)
        report["validation"][path.name] = {
            "pairs": len(table.same), "same": int(table.same.sum()), "auc": round(auc(p, table.same), 4),
            "by_min_probability": [judge(table, p, q, args.mark_score) for q in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "model"}, indent=1)[:4000])
    print("weights:", dict(zip(FEATURES, (round(w, 3) for w in model.weights))))


if __name__ == "__main__":
    main()
