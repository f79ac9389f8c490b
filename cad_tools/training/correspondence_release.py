"""A candidate locked model with the learned CC/MLO correspondence (issue 28): the released
model's weights and exports, its manifest with a ``correspondence`` section, and the operating
point calibrated again on the validation phantoms (the dual-view score changes the FROC).

Data roles, never mixed: the correspondence (a perceptron of two hidden layers of 32) is fitted
on training pairs; the dual-view score and
the minimum link probability on a selection set's pairs; the operating point on the validation
set (seed 1402, as every released model); test data are never read here.

``python -m cad_tools.training.correspondence_release --released models/phantom-retinanet-r18
--train T.npz... --selection S.npz --validation build/phantoms/val-cal --min-probability Q
--out DIR``
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from cad.detect.locked import MANIFEST_FILE, load_locked_model, sha256_file
from cad.detect.manifest import CORRESPONDENCE_KEY
from cad.detect.runtime import make_runtime
from cad_tools.training.correspondence import PairTable
from cad_tools.training.correspondence_fit import fit_dual, fit_perceptron, judge, linking_probabilities
from cad_tools.training.release import OPERATING_FPI, set_operating_point


def _write(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def build(released: Path, train: list[Path], selection: Path, validation: Path, out: Path, name: str,
          min_probability: float, min_score: float) -> dict[str, Any]:
    model = fit_perceptron([PairTable.load(p) for p in train], min_probability=min_probability, min_score=min_score)
    chosen = PairTable.load(selection)
    model = fit_dual(chosen, model)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(released, out)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["name"] = name
    manifest[CORRESPONDENCE_KEY] = model.to_dict()
    manifest.pop("monitoring", None)  # the released model's output reference does not describe this one
    manifest["operating_point"] = {"threshold": manifest["operating_point"]["threshold"], "fpi": OPERATING_FPI}
    training = manifest.setdefault("training", {})
    training["correspondence"] = {
        "train_pairs": {p.name: sha256_file(p) for p in train}, "selection_pairs": {selection.name: sha256_file(selection)},
        "selection": judge(chosen, linking_probabilities(chosen, model), model, manifest["operating_point"]["threshold"]),
    }
    _write(out, manifest)
    return set_operating_point(out, manifest, validation, make_runtime(load_locked_model(out)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--released", type=Path, required=True)
    parser.add_argument("--train", nargs="+", type=Path, required=True)
    parser.add_argument("--selection", type=Path, required=True)
    parser.add_argument("--validation", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="phantom-retinanet-r18-dv")
    parser.add_argument("--min-probability", type=float, required=True)
    parser.add_argument("--min-score", type=float, default=0.1)
    args = parser.parse_args(argv)
    manifest = build(args.released, args.train, args.selection, args.validation, args.out, args.name,
                     args.min_probability, args.min_score)
    print(f"{args.out}: operating threshold {manifest['operating_point']['threshold']}")


if __name__ == "__main__":
    main()
