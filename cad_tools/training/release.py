"""Turn a training run's model into the released, locked model folder.

``calibrate``: copy the run's weights and manifest, add the linking configuration, run the
locked pipeline on the validation phantoms and set the operating point (the dual-view score
threshold at the chosen false-positive rate on validation data, never on test data).
``record``: add held-out test metrics from `cad evaluate` to the manifest (the manifest is not
part of the weights hash, so recording results does not change the model's identity).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import cad
from cad.analysis.pipeline import analyse_study
from cad.detect.linking import LinkingConfig
from cad.detect.locked import MANIFEST_FILE, WEIGHTS_FILE, load_locked_model, sha256_file
from cad.detect.runtime import Runtime
from cad.io import load
from cad_torch.runtime import TorchRuntime
from verification.standalone import evaluate

OPERATING_FPI = 1.0


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def calibrate(run_model: Path, validation: Path, out: Path, linking: LinkingConfig) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_model / WEIGHTS_FILE, out / WEIGHTS_FILE)
    (out / WEIGHTS_FILE).chmod(0o644)
    manifest = json.loads((run_model / MANIFEST_FILE).read_text())
    manifest["linking"] = linking.to_dict()
    manifest["algorithm"] = {"name": cad.ALGORITHM_NAME, "version": cad.__version__}
    manifest["operating_point"] = {"threshold": 0.0, "fpi": OPERATING_FPI}
    _write_manifest(out, manifest)
    model = load_locked_model(out)
    return set_operating_point(out, manifest, validation, TorchRuntime(model, max_batch=1))


def set_operating_point(out: Path, manifest: dict[str, Any], validation: Path, runtime: Runtime) -> dict[str, Any]:
    """Run the locked pipeline of the model in ``out`` on the validation phantoms with ``runtime``
    and write its operating point (the dual-view score threshold at OPERATING_FPI false marks per
    image there, never on test data) and the validation metrics into its manifest."""
    model = load_locked_model(out)
    truth = json.loads((validation / "truth.json").read_text())
    findings = {}
    for study in load([validation]).studies:
        result, _ = analyse_study(study, model, runtime)
        findings[study.study_instance_uid] = result
    metrics = evaluate(truth, findings)
    threshold = metrics["dual_view"]["threshold_at_fpi"][f"{OPERATING_FPI:g}"]
    manifest["operating_point"] = {
        "threshold": threshold,
        "fpi": OPERATING_FPI,
        "definition": f"dual-view finding score at {OPERATING_FPI:g} false marks per image on "
        f"{len(truth['exams'])} validation phantom exams (seed {truth.get('seed')}), never used for testing",
        "validation": {"exams": len(truth["exams"]), "seed": truth.get("seed"),
                       "truth_sha256": sha256_file(validation / "truth.json")},
    }
    manifest.setdefault("metrics", {})["validation_pipeline"] = metrics
    _write_manifest(out, manifest)
    return manifest


def record(model_dir: Path, metrics_path: Path, key: str) -> None:
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    manifest.setdefault("metrics", {})[key] = json.loads(metrics_path.read_text())
    _write_manifest(model_dir, manifest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("calibrate")
    c.add_argument("--run-model", type=Path, required=True)
    c.add_argument("--validation", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("record")
    r.add_argument("--model", type=Path, required=True)
    r.add_argument("--metrics", type=Path, required=True)
    r.add_argument("--key", default="test")
    args = parser.parse_args()
    if args.command == "calibrate":
        manifest = calibrate(args.run_model, args.validation, args.out, LinkingConfig())
        print(f"operating threshold {manifest['operating_point']['threshold']} written to {args.out}")
    else:
        record(args.model, args.metrics, args.key)


if __name__ == "__main__":
    main()
