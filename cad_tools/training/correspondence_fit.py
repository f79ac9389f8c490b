"""Fit the learned CC/MLO correspondence (a small perceptron, or a logistic regression, over
:data:`cad.detect.correspondence.FEATURES`) on training pairs, and judge linking on validation
pairs: pair AUC, and link recall and precision after the assignment at each minimum probability.

``python -m cad_tools.training.correspondence_fit --train T.npz [T2.npz...] --validation V.npz
--out fit.json`` writes the fitted model (the manifest's ``linking.correspondence``) and the
validation table; nothing here reads test data.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from cad.detect.correspondence import FEATURES, CorrespondenceModel, assign
from cad_tools.training.correspondence import PairTable


def logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """Maximum-likelihood logistic regression with an L2 penalty (weights, bias); unweighted, so
    that its outputs are probabilities at the data's own base rate."""

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        margin = x @ w + b
        p = 1.0 / (1.0 + np.exp(-margin))
        grad = p - y
        return (float((np.logaddexp(0.0, margin) - y * margin).mean() + 0.5 * l2 * w @ w / len(y)),
                np.append(x.T @ grad / len(y) + l2 * w / len(y), grad.mean()))

    result = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B")
    return result.x[:-1], float(result.x[-1])


def _training_pairs(tables: list[PairTable], min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features and labels of the pairs linking considers (both candidates at least
    ``min_score``), and the centring and scaling of the features."""
    x = np.concatenate([t.features for t in tables])
    y = np.concatenate([t.same for t in tables]).astype(np.float64)
    keep = np.concatenate([np.minimum(t.cc_score, t.mlo_score) >= min_score for t in tables])
    x, y = x[keep], y[keep]
    centre, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    return x, y, centre, scale


def _layer(weights: np.ndarray, bias: np.ndarray) -> tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]:
    return tuple(tuple(float(v) for v in row) for row in weights), tuple(float(v) for v in bias)


def fit(tables: list[PairTable], l2: float = 1.0, min_probability: float = 0.5,
        min_score: float = 0.1) -> CorrespondenceModel:
    """A logistic correspondence (one layer) over standardised features."""
    x, y, centre, scale = _training_pairs(tables, min_score)
    weights, bias = logistic((x - centre) / scale, y, l2)
    return CorrespondenceModel((_layer(weights[:, None], np.array([bias])),), tuple(float(v) for v in centre),
                               tuple(float(v) for v in scale), min_probability, min_score)


def fit_perceptron(tables: list[PairTable], hidden: int = 32, epochs: int = 300, weight_decay: float = 1e-4,
                   seed: int = 0, min_probability: float = 0.5, min_score: float = 0.1) -> CorrespondenceModel:
    """A perceptron correspondence (two hidden ReLU layers of ``hidden``), trained full-batch
    with Adam on the binary cross-entropy (seeded: the same data give the same weights)."""
    import torch

    x, y, centre, scale = _training_pairs(tables, min_score)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.ReLU(), torch.nn.Linear(hidden, 1)).double()
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=weight_decay)
    inputs, labels = torch.tensor((x - centre) / scale), torch.tensor(y)
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(inputs).squeeze(1), labels)
        loss.backward()
        optimiser.step()
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    layers = tuple(_layer(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in linear)
    return CorrespondenceModel(layers, tuple(float(v) for v in centre), tuple(float(v) for v in scale),
                               min_probability, min_score)


def linking_probabilities(table: PairTable, model: CorrespondenceModel) -> np.ndarray:
    """The model's probability of every pair of the table, 0 where a candidate scores below the
    model's minimum (linking never considers those, as in the device)."""
    return np.where(np.minimum(table.cc_score, table.mlo_score) >= model.min_score,
                    model.probabilities(table.features), 0.0)


def candidate_evidence(table: PairTable, probability: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate of the table (CC and MLO): its own score, its best counterpart's probability
    and whether it hits a lesion."""
    own, best, hit = [], [], []
    for index, score, lesion in ((table.cc, table.cc_score, table.cc_lesion),
                                 (table.mlo, table.mlo_score, table.mlo_lesion)):
        key = table.breast.astype(np.int64) * 1000 + index
        order = np.argsort(key, kind="stable")
        keys, first = np.unique(key[order], return_index=True)
        best += list(np.maximum.reduceat(probability[order], first))
        own += list(score[order][first])
        hit += [bool(v) for v in lesion[order][first]]
    return np.array(own), np.array(best), np.array(hit, dtype=np.float64)


def fit_dual(table: PairTable, model: CorrespondenceModel, l2: float = 1.0) -> CorrespondenceModel:
    """The dual-view score (own score and best counterpart's probability, both as logits) fitted
    on a selection set's candidates: which of them hit a lesion."""
    own, best, hit = candidate_evidence(table, linking_probabilities(table, model))

    def logit(v: np.ndarray) -> np.ndarray:
        v = np.clip(v, 1e-4, 1 - 1e-4)
        return np.asarray(np.log(v / (1 - v)))

    weights, bias = logistic(np.column_stack([logit(own), logit(best)]), hit, l2)
    return replace(model, dual_view=(bias, float(weights[0]), float(weights[1])))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted half."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)) if n_pos and n_neg else float("nan")


def links_of(table: PairTable, probability: np.ndarray, model: CorrespondenceModel) -> list[tuple[int, int, int]]:
    """The device's assignment (cad.detect.correspondence.assign) in every breast: (breast, cc, mlo)."""
    out = []
    for b in np.unique(table.breast):
        rows = np.flatnonzero(table.breast == b)
        p = np.zeros((int(table.cc[rows].max()) + 1, int(table.mlo[rows].max()) + 1))
        p[table.cc[rows], table.mlo[rows]] = probability[rows]
        out += [(int(b), i, j) for i, j in assign(p, model)]
    return out


def judge(table: PairTable, probability: np.ndarray, model: CorrespondenceModel, mark_score: float) -> dict[str, Any]:
    """Link recall (lesions whose CC and MLO candidates both score at least ``mark_score`` and
    are linked to each other) and precision (of links whose stronger candidate scores at least
    ``mark_score``: those joining one lesion's two views; wrong: a lesion and a false mark or
    another lesion; false pairs: two false marks).

    A selection figure on the pair table, not `cad evaluate`'s: it applies ``mark_score`` to the
    detector's own scores (not the dual-view scores), counts every lesion the table labels
    (masses under 8 mm too) and every candidate the table holds (also those under the minimum
    score linking considers). Report held-out linking from `cad evaluate` only (docs/detection.md)."""
    index = {(int(b), int(i), int(j)): k for k, (b, i, j) in enumerate(zip(table.breast, table.cc, table.mlo))}
    linked = set()
    right = wrong = false_pairs = 0
    for b, i, j in links_of(table, probability, model):
        k = index[(b, i, j)]
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
    return {"min_probability": model.min_probability, "links": total, "one_lesion": right, "wrong": wrong,
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
    parser.add_argument("--min-score", type=float, default=0.1, help="candidates below this take no part in linking")
    parser.add_argument("--hidden", type=int, default=32, help="perceptron width (0: logistic regression)")
    args = parser.parse_args(argv)
    tables = [PairTable.load(p) for p in args.train]
    model = (fit_perceptron(tables, args.hidden, min_score=args.min_score) if args.hidden
             else fit(tables, args.l2, min_score=args.min_score))
    report: dict[str, Any] = {"model": model.to_dict(), "validation": {}}
    for path in args.validation:
        table = PairTable.load(path)
        p = linking_probabilities(table, model)
        report["validation"][path.name] = {
            "pairs": len(table.same), "same": int(table.same.sum()), "auc": round(auc(p, table.same), 4),
            "by_min_probability": [judge(table, p, replace(model, min_probability=q), args.mark_score)
                                   for q in (0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "model"}, indent=1)[:4000])
    if len(model.layers) == 1:
        print("weights:", dict(zip(FEATURES, (round(row[0], 3) for row in model.layers[0][0]))))


if __name__ == "__main__":
    main()
