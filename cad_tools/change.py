"""`cad release compare`: run the released and a candidate model on the protocol's sequestered
phantom sets and apply the protocol (:mod:`verification.change_control`).

Both models see the same files; each study's result is written as findings.json under
``out/findings/<released|candidate>/`` (the record the verdict was computed from).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cad.analysis.pipeline import analyse_studies
from cad.detect.locked import LockedModel, sha256_file
from cad.detect.runtime import make_runtime
from cad.io import load
from cad.result.findings_json import FINDINGS_FILE, write_result
from cad.result.model import StudyResult
from cad_tools.phantom.generate import PhantomConfig, generate
from verification.change_control import Protocol, ProtocolError, compare, write_verdict
from verification.change_report import write_report

log = logging.getLogger(__name__)
#: studies analysed together (their views share runtime batches)
BATCH = 4


def prepare_data(protocol: Protocol, data_dir: Path, workers: int = 2) -> tuple[dict[str, Any], list[Path]]:
    """The protocol's sets in ``data_dir`` (generated from their seeds when absent; a set whose
    truth differs from the hash the protocol records is refused) and their merged truth."""
    exams: list[dict[str, Any]] = []
    folders = []
    for test_set in protocol.test_sets:
        folder = data_dir / test_set.name
        truth_path = folder / "truth.json"
        if not truth_path.is_file():
            log.info("generating %s (%d exams, seed %d)", test_set.name, test_set.exams, test_set.seed)
            generate(folder, test_set.exams, test_set.seed, PhantomConfig(spacing_mm=test_set.spacing_mm),
                     workers=workers)
        digest = sha256_file(truth_path)
        if test_set.truth_sha256 is not None and digest != test_set.truth_sha256:
            raise ProtocolError(f"{truth_path}: truth SHA-256 {digest[:16]}… is not the sequestered set's "
                                f"{test_set.truth_sha256[:16]}… (regenerated with another generator version?)")
        truth = json.loads(truth_path.read_text())
        if len(truth["exams"]) != test_set.exams or truth.get("seed") != test_set.seed:
            raise ProtocolError(f"{truth_path}: not {test_set.exams} exams of seed {test_set.seed}")
        exams += truth["exams"]
        folders.append(folder)
    merged = {"generator": "cad phantom (sets of the protocol)", "schema_version": "1.2",
              "seed": protocol.test_sets[0].seed if len(protocol.test_sets) == 1 else None, "exams": exams}
    return merged, folders


def run_model(model: LockedModel, runtime_name: str, folders: list[Path], out: Path) -> dict[str, StudyResult]:
    """Every study of ``folders`` through ``model``; the results, also written as findings.json."""
    runtime = make_runtime(model, runtime_name, evaluation=True)
    results: dict[str, StudyResult] = {}
    for folder in folders:
        studies = load([folder]).studies
        for first in range(0, len(studies), BATCH):
            for result, _ in analyse_studies(studies[first:first + BATCH], model, runtime):
                write_result(result, out / result.study_instance_uid / FINDINGS_FILE)
                results[result.study_instance_uid] = result
    return results


def release_compare(protocol: Protocol, released: LockedModel, candidate: LockedModel, out: Path,
                    data_dir: Path, command: str, candidate_runtime: str | None = None) -> dict[str, Any]:
    """Run both models on the sequestered data, apply the protocol, write verdict.json, the
    HTML/PDF report and the release-notes entry into ``out``; returns the verdict.
    ``candidate_runtime`` judges a runtime variant (e.g. ``onnxruntime-int8``) as the candidate."""
    truth, folders = prepare_data(protocol, data_dir)
    found = {name: run_model(model, runtime, folders, out / "findings" / name)
             for name, model, runtime in (("released", released, protocol.runtime),
                                          ("candidate", candidate, candidate_runtime or protocol.runtime))}
    verdict, _, _ = compare(protocol, truth, found["released"], found["candidate"])
    write_verdict(verdict, out / "verdict.json")
    write_report(verdict, out, command)
    return verdict


def record_variant_acceptance(model: LockedModel, runtime_name: str, verdict: dict[str, Any], record: Path) -> None:
    """Write the protocol's verdict on a runtime variant beside its export in the manifest
    (``runtimes.<key>.acceptance``), which decides whether a site may run it."""
    from cad.detect.locked import register_export
    from cad.detect.runtime import ONNX_INT8_EXPORT, RuntimeName

    if RuntimeName(runtime_name) is not RuntimeName.ONNXRUNTIME_INT8:
        return
    entry = dict(model.manifest.runtimes[ONNX_INT8_EXPORT.key].raw)
    entry["acceptance"] = {
        "verdict": verdict["verdict"], "protocol": f"{verdict['protocol']['id']} {verdict['protocol']['version']}",
        "protocol_sha256": verdict["protocol"]["sha256"], "record": record.as_posix(),
        "verdict_sha256": sha256_file(record), "failed_criteria": verdict["failed_criteria"],
    }
    register_export(model.path, ONNX_INT8_EXPORT.key, entry)
