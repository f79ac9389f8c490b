"""The generated pages of the submission document set (reStructuredText for Sphinx + sphinx-needs).

Every page here is written from the sources of truth at build time: requirements, risk file,
software items, SOUP list, JUnit results, the released model's manifest, a fresh `cad evaluate`
report and a reader-study analysis of the bundled example. Nothing in them is typed by hand,
so the documents cannot drift from the repository. docs/conf.py calls :func:`generate`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cad
from traceability.conformance import conformance_page
from traceability.matrix import ANOMALY, ENVIRONMENT, VERIFIED, Trace
from traceability.report import git_revision, requirement_rows, risk_rows, tool_versions
from traceability.requirements import CATEGORIES, CATEGORY_TITLES, REPO_ROOT
from traceability.results import PASSED
from traceability.risk import REGIONS, STRIDE
from traceability.rst import heading, indent, list_table, literal
from verification.html import fmt


@dataclass(frozen=True)
class DocInputs:
    """What the pages are generated from, besides the YAML sources."""

    trace: Trace
    model_dir: Path
    performance_dir: Path | None
    reader_study: dict[str, Any] | None
    reader_study_reference: dict[str, Any] | None


def need(kind: str, title: str, need_id: str, fields: dict[str, str], body: str) -> str:
    lines = [f".. {kind}:: {literal(title)}", f"   :id: {need_id}"]
    lines += [f"   :{k}: {v}" for k, v in fields.items() if v]
    return "\n".join(lines) + "\n\n" + indent(body) + "\n\n"


def _verdict_status(verdict: str) -> str:
    return verdict.replace(" ", "_")


# -- pages -----------------------------------------------------------------------------------

def srs_page(trace: Trace) -> str:
    out = [heading("Software requirements specification")]
    safety = trace.risk.safety
    out.append(
        f"Requirements of **mammo-cad {cad.__version__}** as built, generated from ``requirements/*.yaml``. "
        f"IEC 62304 software safety class **{safety.safety_class}** (rationale in :doc:`risk`). A requirement is "
        "*safety relevant* when it implements a risk control of the risk management file; its controls and "
        "hazards are listed with it. The verdict is that of the verification report of this build.\n\n")
    counts = {c: sum(r.requirement.category == c for r in trace.requirements) for c in CATEGORIES}
    out.append(list_table(["category", "requirements", "safety relevant"],
                          [[CATEGORY_TITLES[c], counts[c],
                            sum(r.safety_relevant for r in trace.requirements if r.requirement.category == c)]
                           for c in CATEGORIES if counts[c]], [50, 20, 20]))
    for category in CATEGORIES:
        members = [r for r in trace.requirements if r.requirement.category == category]
        if not members:
            continue
        out.append(heading(CATEGORY_TITLES[category], "-"))
        for r in members:
            req = r.requirement
            safety = (f"yes: implements {', '.join(r.controls)} (hazards {', '.join(r.hazards)})"
                      if r.safety_relevant else "no")
            body = (f"{literal(req.text)}\n\n:Rationale: {literal(req.rationale)}\n"
                    f":Acceptance: {literal(req.acceptance)}\n"
                    f":Safety relevant: {safety}\n"
                    f":Source: ``requirements/{req.source}``")
            if req.analysis:
                criteria = "; ".join(f"{c.label} {c.op} {c.value:g}" for c in req.analysis.criteria)
                body += f"\n:Verified by analysis of: ``{req.analysis.evidence}`` ({literal(criteria)})"
            if req.needs:
                body += f"\n:Needs: {', '.join(req.needs)}"
            out.append(need("req", req.title, req.id, {
                "status": _verdict_status(r.verdict), "category": req.category,
                "safety": "yes" if r.safety_relevant else "no", "allocated": ", ".join(r.items)}, body))
    return "".join(out)


def architecture_page(trace: Trace) -> str:
    arch = trace.architecture
    out = [heading("Software items and SOUP")]
    out.append(
        "Software items of the software system, generated from ``docs/software-items.yaml``; every module of "
        "``cad/``, ``verification/`` and ``traceability/`` belongs to exactly one item (checked by ``cad trace``). "
        "The device software is the set of items marked *device*; the others are tools that never run at a "
        "site. The flow and design decisions are in :doc:`../architecture`.\n\n")
    out.append(list_table(["item", "name", "device", "requirements"],
                          [[i.id, i.name, "yes" if i.device else "no (tool)", len(i.requirements)] for i in arch.items],
                          [15, 45, 15, 15]))
    for item in arch.items:
        modules = ", ".join(f"``{m}``" for m in arch.modules_of(item.id))
        body = (f":Interface: {literal(item.interface)}\n:Modules: {modules}\n"
                f":Inside the device boundary: {'yes' if item.device else 'no (tool)'}")
        out.append(need("item", item.name, item.id, {"device": "yes" if item.device else "no"}, body))
    out.append(heading("SOUP list", "-"))
    out.append(
        "Generated from ``locked-dependencies.txt`` (names and exact versions), the installed distributions' "
        "metadata (licence, project links) and ``docs/soup.yaml`` (purpose, failure effect, mitigation of "
        "each direct runtime dependency). *Runtime SOUP* is everything the ``mammo-cad`` distribution needs "
        "to run (its dependency closure); what an optional extra adds for a device function (``batch``: "
        "`cad batch --engine ray`) is runtime SOUP of that extra; *development tools* serve testing and "
        "documentation only.\n\n")
    runtime = [s for s in trace.soup if s.runtime]
    direct = [s for s in runtime if s.direct]
    out.append(heading("Direct runtime dependencies", "~"))
    out.append(list_table(["SOUP", "version", "licence", "purpose", "failure effect", "mitigation", "known anomalies"],
                          [[s.name, s.version, s.licence, s.purpose, s.failure_effect, s.mitigation, s.anomalies]
                           for s in direct], [10, 7, 9, 20, 20, 20, 14]))
    out.append(heading("Transitive runtime dependencies", "~"))
    out.append(list_table(["SOUP", "version", "licence", "required by", "known anomalies"],
                          [[s.name, s.version, s.licence, ", ".join(s.required_by), s.anomalies]
                           for s in runtime if not s.direct], [18, 10, 18, 24, 30]))
    out.append(heading("Development tools (not part of the device)", "~"))
    out.append(list_table(["package", "version", "licence", "known anomalies"],
                          [[s.name, s.version, s.licence, s.anomalies] for s in trace.soup if not s.runtime],
                          [25, 12, 23, 40]))
    return "".join(out)


def risk_page(trace: Trace) -> str:
    risk = trace.risk
    policy = risk.policy
    out = [heading("Risk management file")]
    out.append(
        "ISO 14971 risk analysis, evaluation and control of mammo-cad, generated from ``risk/*.yaml``. Risk "
        "controls point to the requirements that implement them; their verification status comes from this "
        "build's verification report.\n\n")
    out.append(heading("Software safety classification (IEC 62304 4.3)", "-"))
    out.append(f"Software system **{risk.safety.software_system}**: class **{risk.safety.safety_class}**.\n\n"
               f"{literal(risk.safety.rationale)}\n\n{literal(risk.safety.items)}\n\n")
    out.append(heading("Risk acceptability policy", "-"))
    out.append(list_table(["severity", "name", "description"],
                          [[l.level, l.name, l.description] for l in policy.severity], [10, 20, 70]))
    out.append(list_table(["probability", "name", "description"],
                          [[l.level, l.name, l.description] for l in policy.probability], [10, 20, 70]))
    out.append("Risk regions (rows: severity, columns: probability): " +
               ", ".join(f"**{k}** {v}" for k, v in REGIONS.items()) + ".\n\n")
    out.append(list_table(["S \\\\ P", *[str(p.level) for p in policy.probability]],
                          [[f"{s.level} {s.name}", *policy.matrix[s.level - 1]] for s in policy.severity]))
    out.append(f"**Benefit.** {literal(policy.benefit)}\n\n")
    out.append(heading("Risk evaluation summary", "-"))
    out.append(list_table(
        ["hazard", "title", "S", "P before", "risk before", "controls", "P after", "residual risk"],
        [[h.id, h.title, h.severity, h.probability_before, policy.region(h.severity, h.probability_before),
          ", ".join(h.controls), h.probability_after, policy.region(h.severity, h.probability_after)]
         for h in risk.hazards], [10, 30, 5, 8, 8, 21, 8, 10]))
    out.append(heading("Hazards", "-"))
    for h in risk.hazards:
        body = (f":Hazard: {literal(h.hazard)}\n:Sequence of events: {literal(h.sequence)}\n"
                f":Hazardous situation: {literal(h.hazardous_situation)}\n:Harm: {literal(h.harm)}\n"
                f":Before control: severity {h.severity}, probability {h.probability_before} "
                f"({REGIONS[policy.region(h.severity, h.probability_before)]})\n"
                f":After control: severity {h.severity}, probability {h.probability_after} "
                f"({REGIONS[policy.region(h.severity, h.probability_after)]})\n"
                f":Residual risk: {literal(h.residual)}\n\n"
                f".. needflow::\n   :root_id: {h.id}\n   :root_direction: outgoing\n   :root_depth: 2\n"
                f"   :link_types: mitigated_by, implements\n   :direction: lr")
        out.append(need("hazard", h.title, h.id, {
            "severity": str(h.severity), "mitigated_by": ", ".join(h.controls),
            "residual": policy.region(h.severity, h.probability_after)}, body))
    out.append(heading("Risk control measures", "-"))
    for c in risk.controls:
        verdict = trace.control_verdict(c.id)
        body = (f"{literal(c.description)}\n\n:Type: {c.type}\n"
                f":Implemented by: {', '.join(c.requirements) or 'no requirement yet: ' + str(c.gap)}\n"
                f":Verification of the implementing requirements: {verdict}")
        out.append(need("control", c.title, c.id, {"status": _verdict_status(verdict), "control_type": c.type,
                                                  "implements": ", ".join(c.requirements)}, body))
    out.append(threat_model_section(trace))
    out.append(heading("Known residual anomalies", "-"))
    if not risk.anomalies:
        out.append("None.\n\n")
    for a in risk.anomalies:
        body = (f"{literal(a.description)}\n\n:Affects: {', '.join(a.requirements)}\n"
                f":Hazards: {', '.join(a.hazards)}\n:Evaluation: {literal(a.evaluation)}\n"
                f":Reference: {literal(a.reference)}")
        out.append(need("anomaly", a.title, a.id, {"status": a.status, "affects": ", ".join(a.requirements)}, body))
    return "".join(out)


def threat_model_section(trace: Trace) -> str:
    """The STRIDE threat model (risk/threats.yaml): data flows, then each threat with its controls,
    where they are implemented, their verification and the residual risk."""
    risk = trace.risk
    out = [heading("Threat model (STRIDE)", "-"),
           "Cybersecurity threats over the data flows of a site installation, from ``risk/threats.yaml``. Each "
           "threat names its STRIDE categories (" + ", ".join(f"**{k}** {v}" for k, v in STRIDE.items()) +
           "), the risk controls and requirements that answer it (their verification from this build), the "
           "modules where the control lives, the hazards it could lead to and the residual risk.\n\n"]
    out.append(heading("Data flows", "~"))
    out.append(list_table(["flow", "name", "trust boundary", "description"],
                          [[f.id, f.name, f.trust_boundary, f.description] for f in risk.flows], [8, 22, 22, 48]))
    out.append(heading("Threats", "~"))
    out.append(list_table(
        ["threat", "flow", "STRIDE", "controls", "verification", "residual"],
        [[t.id, t.flow, "".join(t.stride), ", ".join(t.controls), trace.threat_verdict(t.id), t.residual_risk]
         for t in risk.threats], [10, 8, 10, 30, 27, 15]))
    names = {f.id: f.name for f in risk.flows}
    for t in risk.threats:
        verdict = trace.threat_verdict(t.id)
        body = (f"{literal(t.threat)}\n\n:Data flow: {t.flow} ({names.get(t.flow, '?')})\n"
                f":STRIDE: {', '.join(STRIDE[s] for s in t.stride if s in STRIDE)}\n"
                f":Controls: {', '.join(t.controls)}\n:Requirements: {', '.join(t.requirements)}\n"
                f":Implemented in: {', '.join(f'``{m}``' for m in t.implemented_in)}\n"
                f":Hazards: {', '.join(t.hazards) or 'none (security only)'}\n"
                f":Verification: {verdict}\n:Residual risk: {t.residual_risk}: {literal(t.residual)}")
        out.append(need("threat", t.threat.split(".")[0][:90], t.id, {
            "status": _verdict_status(verdict), "stride": "".join(t.stride), "flow": t.flow,
            "mitigated_by": ", ".join(t.controls)}, body))
    return "".join(out)


def _test_need_ids(trace: Trace) -> dict[str, str]:
    assert trace.run is not None
    return {t.node_id: f"TC-{k:04d}" for k, t in enumerate(trace.run.results, start=1)}


def verification_page(trace: Trace) -> str:
    out = [heading("Verification report")]
    run = trace.run
    if run is None:
        return "".join(out) + "No test results were given to this build.\n"
    outcomes: dict[str, int] = {}
    for t in run.results:
        outcomes[t.outcome] = outcomes.get(t.outcome, 0) + 1
    verdicts = trace.counts()
    out.append(
        f"Results of the automated test suite (``{Path(run.source).name}``, run {run.timestamp} on host "
        f"``{run.hostname}``) joined to the requirements through their ``@pytest.mark.req`` tags, and of the "
        f"analyses of recorded measurements for performance requirements. Revision ``{git_revision()}``.\n\n")
    out.append(list_table(["test outcome", "tests"], sorted(outcomes.items()), [50, 50]))
    tools = tool_versions()
    if tools:
        out.append("External tools the tests ran (Debian packages, as installed where the documents were built):\n\n")
        out.append(list_table(["package", "version"], sorted(tools.items()), [50, 50]))
    out.append(list_table(["requirement verdict", "requirements"], sorted(verdicts.items()), [50, 50]))
    out.append(heading("Verdict per requirement", "-"))
    out.append(list_table(["requirement", "title", "passed / tests", "analysis", "verdict"],
                          [[r.requirement.id, r.requirement.title,
                            f"{sum(o == PASSED for _, o in r.tests)} / {len(r.tests)}",
                            "; ".join(f"{c.label}: {c.measured if c.measured is not None else 'missing'} "
                                      f"({c.op} {c.target:g}) {'holds' if c.holds else 'fails'}" for c in r.analysis),
                            r.verdict] for r in trace.requirements], [14, 34, 12, 28, 12]))
    not_done = [r for r in trace.requirements if r.verdict != VERIFIED]
    out.append(heading("Requirements not verified in this build", "-"))
    if not not_done:
        out.append("None.\n\n")
    else:
        out.append(list_table(["requirement", "verdict", "why"],
                              [[r.requirement.id, r.verdict,
                                ("known anomaly " + ", ".join(r.anomalies)) if r.verdict == ANOMALY else
                                ("tests need " + ", ".join(r.requirement.needs)) if r.verdict == ENVIRONMENT else
                                "see the traceability gaps"] for r in not_done], [20, 20, 60]))
    ids = _test_need_ids(trace)
    out.append(heading("Test cases", "-"))
    for t in run.results:
        body = f":Test: ``{t.node_id}``\n:Outcome: {t.outcome}\n:Duration: {t.seconds:.2f} s"
        if t.message:
            note = " ".join(t.message.split())[:300].replace("`", "'")
            body += f"\n:Note: ``{note}``"  # free text from pytest: shown verbatim, never parsed as markup
        out.append(need("test", t.node_id.rsplit("::", 1)[-1], ids[t.node_id], {
            "status": t.outcome, "verifies": ", ".join(t.requirements)}, body))
    return "".join(out)


def traceability_page(trace: Trace) -> str:
    out = [heading("Traceability matrices")]
    out.append(
        "Built by the same code as ``cad trace --out DIR`` (which also writes them as CSV and HTML) from the "
        "requirements, the risk file, the software items, the SOUP list and the JUnit results.\n\n")
    out.append(heading("Gaps", "-"))
    out.append("No gaps.\n\n" if not trace.gaps else "".join(f"* {literal(g)}\n" for g in trace.gaps) + "\n")
    if trace.notes:
        out.append(heading("Reported, not counted as gaps", "-"))
        out.append("".join(f"* {literal(n)}\n" for n in trace.notes) + "\n")
    out.append(heading("Requirement → software item → tests → result", "-"))
    out.append(list_table(["requirement", "items", "safety", "controls", "passed tests", "verdict"],
                          [[r["requirement"], r["software_items"], r["safety_relevant"], r["risk_controls"], r["passed"],
                            r["verdict"]] for r in requirement_rows(trace)], [16, 16, 8, 30, 12, 18]))
    out.append(heading("Hazard → risk control → requirement → verification", "-"))
    out.append(list_table(["hazard", "risk before", "control", "requirement", "requirement verdict", "residual risk"],
                          [[r["hazard"], f"S{r['severity']} P{r['probability_before']} {r['risk_before']}", r["control"],
                            r["requirement"], r["requirement_verdict"],
                            f"S{r['severity']} P{r['probability_after']} {r['risk_after']}"] for r in risk_rows(trace)],
                          [12, 16, 12, 18, 22, 20]))
    out.append(heading("Needs overview (sphinx-needs)", "-"))
    out.append(".. needtable::\n   :types: control\n   :columns: id, title, control_type, implements, status\n"
               "   :style: table\n\n")
    return "".join(out)


def performance_page(inputs: DocInputs, static: Path) -> str:
    out = [heading("Standalone performance report")]
    manifest = json.loads((inputs.model_dir / "manifest.json").read_text())
    folder = inputs.performance_dir
    if folder is None or not (folder / "metrics.json").is_file():
        return "".join(out) + "No evaluation report was given to this build (run ``make evaluate-phantom``).\n"
    metrics = json.loads((folder / "metrics.json").read_text())
    data = metrics["data"]
    out.append(
        f"``cad evaluate`` of the released model **{manifest['name']}** (weights SHA-256 "
        f"``{manifest['weights']['sha256']}``) on the held-out phantom test set, generated by "
        "``make evaluate-phantom``, which rebuilds it from its seed and runs ``cad detect`` and ``cad evaluate``. "
        "Phantoms only: this says nothing about clinical performance.\n\n")
    out.append(list_table(["item", "value"], [[k, v] for k, v in sorted(data.items()) if not isinstance(v, (dict, list))],
                          [50, 50]))
    recorded = manifest.get("metrics", {}).get("test", {})
    same = recorded.get("dual_view") == metrics.get("dual_view") and recorded.get("linking") == metrics.get("linking")
    out.append(f"The figures below {'equal' if same else '**differ from**'} those recorded in the model manifest "
               "(``metrics.test``), which is what ``cad trace`` checks the requirements against.\n\n")
    dual, single = metrics["dual_view"]["sensitivity_at_fpi"], metrics["single_view"]["sensitivity_at_fpi"]
    out.append(heading("Lesion sensitivity (FROC)", "-"))
    out.append(list_table(["false marks per image", *dual.keys()],
                          [["dual-view scoring", *[fmt(v, 3) for v in dual.values()]],
                           ["single-view scoring", *[fmt(v, 3) for v in single.values()]],
                           ["fusion gain", *[fmt(metrics["fusion_gain"].get(k), 3) for k in dual]]]))
    findable = metrics.get("detectability")
    if findable:
        def estimates(table: dict[str, Any]) -> list[str]:
            return [fmt(table.get(k, {}).get("estimate"), 3) for k in dual]

        out.append(heading("By template-observer visibility", "-"))
        out.append(f"{findable['lesion_views_visible']} of {findable['lesion_views_recorded']} lesion views are "
                   "visible to the template observers (definition: phantom documentation): a descriptive stratum "
                   "of how conspicuous a lesion is, not a ceiling; the detector finds views they call not "
                   "visible.\n\n")
        out.append(list_table(["false marks per image", *dual.keys()], [
            ["visible lesion views", *estimates(findable["visible"]["sensitivity_at_fpi"])],
            ["not-visible lesion views", *estimates(findable["not_visible"]["sensitivity_at_fpi"])],
            ["per lesion (either view)", *estimates(metrics["per_lesion"]["sensitivity_at_fpi"])]]))
    for name, caption in (("froc.png", "FROC"), ("afroc.png", "AFROC"), ("roc.png", "Case-level ROC")):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, static / f"performance-{name}")
            out.append(f".. figure:: performance-{name}\n   :width: 80%\n\n   {caption} (from ``cad evaluate``).\n\n")
    linking = metrics["linking"]
    out.append(heading("CC/MLO linking at the operating point", "-"))
    out.append(list_table(["measure", "value"], [[k, fmt(v, 3)] for k, v in sorted(linking.items())], [60, 40]))
    out.append(heading("Against the acceptance criteria", "-"))
    rows = []
    for r in inputs.trace.requirements:
        for c in r.analysis:
            rows.append([r.requirement.id, c.label, f"{c.op} {c.target:g}", fmt(c.measured, 3),
                         "met" if c.holds else "not met"])
    out.append(list_table(["requirement", "criterion", "target", "recorded", "result"], rows, [15, 35, 15, 15, 20]))
    for key, name in (("afroc", "AFROC"), ("wafroc", "wAFROC")):
        if isinstance(metrics.get(key), dict):
            ci = metrics[key].get("ci95") or [None, None]
            out.append(f"{name} figure of merit: {fmt(metrics[key].get('estimate'), 3)} "
                       f"(95 % CI {fmt(ci[0], 3)} to {fmt(ci[1], 3)}).\n\n")
    return "".join(out)


def reader_study_page(inputs: DocInputs) -> str:
    out = [heading("Reader-study analysis example")]
    result = inputs.reader_study
    if result is None:
        return "".join(out) + "No reader-study example was analysed in this build.\n"
    out.append(
        "``cad reader-study`` (Obuchowski-Rockette with Hillis degrees of freedom, and Dorfman-Berbaum-Metz) on "
        "the Van Dyke et al. ROC reader study bundled in ``tests/data/reader-study`` (2 modalities, 5 readers, "
        "114 cases), with the Wilcoxon figure of merit, compared with the values RJafroc computes on the same "
        "data. It shows the analysis the product provides for an MRMC validation study.\n\n")
    out.append(list_table(["treatment", "mean figure of merit (Wilcoxon AUC)"],
                          [[m, fmt(v, 4)] for m, v in result["foms"].items()], [50, 50]))
    out.append(list_table(["analysis", "difference", "95 % CI", "df", "p", "RJafroc p"], result["rows"],
                          [20, 14, 24, 14, 12, 14]))
    return "".join(out)


def acceptance_section(folder: Path) -> str:
    """Every recorded verdict of `cad release compare` (docs/acceptance/*.json): the change, the
    protocol, the decision and each endpoint."""
    verdicts = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not verdicts:
        return "No model change has been evaluated under the protocol (docs/change-protocol.yaml) yet.\n\n"
    rows = []
    for path in verdicts:
        v = json.loads(path.read_text())
        c, r = v["candidate"]["algorithm"], v["released"]["algorithm"]
        endpoints = "; ".join(f"{e['id']} {e['difference']:+.4f} [{e['ci'][0]}, {e['ci'][1]}] "
                              f"{'pass' if e['passed'] else 'FAIL'}" for e in v["criteria"])
        variant = f" {c['runtime_variant']} variant" if c.get("runtime_variant") else ""
        if c.get("settings_sha256") and c.get("settings_sha256") != r.get("settings_sha256"):
            variant += f", settings {c['settings_sha256'][:12]}"
        rows.append([path.stem, f"{c.get('model_name')} {c['model_sha256'][:12]}{variant} (threshold "
                                f"{v['candidate']['operating_point']['threshold']}) vs {r.get('model_name')} "
                                f"{r['model_sha256'][:12]}",
                     f"{v['protocol']['id']} {v['protocol']['version']}", v["verdict"], endpoints])
    return list_table(["record", "candidate vs released", "protocol", "verdict", "endpoints (difference, CI)"],
                      rows, [12, 25, 10, 10, 43])


def release_notes_page(inputs: DocInputs) -> str:
    trace = inputs.trace
    manifest = json.loads((inputs.model_dir / "manifest.json").read_text())
    onnx = manifest.get("runtimes", {}).get("onnxruntime", {})
    out = [heading(f"Release notes: mammo-cad {cad.__version__}")]
    out.append("**Not for clinical use.** Trained and verified on synthetic phantoms only.\n\n")
    out.append(list_table(["item", "value"], [
        ["software version", cad.__version__],
        ["algorithm", cad.ALGORITHM_NAME],
        ["source revision", git_revision()],
        ["IEC 62304 software safety class", trace.risk.safety.safety_class],
        ["locked model", manifest["name"]],
        ["weights SHA-256", manifest["weights"]["sha256"]],
        ["ONNX export SHA-256", onnx.get("sha256", "none")],
        ["operating point (dual-view score)", manifest["operating_point"]["threshold"]],
        ["SOUP (runtime / development tools)",
         f"{sum(s.runtime for s in trace.soup)} / {sum(not s.runtime for s in trace.soup)} packages"],
        ["requirements verified", f"{trace.counts().get(VERIFIED, 0)} of {len(trace.requirements)}"],
    ], [40, 60]))
    out.append(heading("Known residual anomalies", "-"))
    if not trace.risk.anomalies:
        out.append("None.\n\n")
    else:
        out.append(list_table(["anomaly", "title", "requirements", "evaluation"],
                              [[a.id, a.title, ", ".join(a.requirements), a.evaluation] for a in trace.risk.anomalies],
                              [12, 25, 18, 45]))
    planned = [c for c in trace.risk.controls if c.planned]
    out.append(heading("Planned risk controls (block clinical release)", "-"))
    out.append("None.\n\n" if not planned else list_table(
        ["control", "title", "hazards", "what is missing"],
        [[c.id, c.title, ", ".join(trace.risk.hazards_of(c.id)), c.gap or ""] for c in planned], [10, 25, 15, 50]))
    out.append(heading("Model changes accepted or rejected under the protocol", "-"))
    out.append(acceptance_section(REPO_ROOT / "docs" / "acceptance"))
    out.append(heading("Verification status", "-"))
    others = [r for r in trace.requirements if r.verdict not in (VERIFIED, ANOMALY)]
    out.append("Every requirement is verified or covered by a known anomaly.\n\n" if not others else
               "".join(f"* {r.requirement.id}: {r.verdict}\n" for r in others) + "\n")
    return "".join(out)


PAGES = ("srs", "items", "risk", "verification", "traceability", "performance", "reader-study-example",
         "release-notes", "sbom", "conformance")


def sbom_page(folder: Path) -> str:
    """The site install's SBOM (CycloneDX JSON, made now) and its vulnerability report."""
    from traceability.sbom import SBOM_FILE, VULNERABILITY_FILE, audit, make_sbom

    folder.mkdir(parents=True, exist_ok=True)
    bom = make_sbom(folder / SBOM_FILE)
    report = audit(folder / VULNERABILITY_FILE)
    out = [heading("Software bill of materials and vulnerability report"),
           "*Generated.* What a site installs (``pip install mammo-cad``, and what the optional ``batch`` extra adds), "
           "as a CycloneDX 1.6 SBOM made by cyclonedx-bom from the installed metadata of the locked environment, "
           "reduced to the device's runtime closure: :download:`sbom/" + SBOM_FILE + "`. Its vulnerability report "
           "comes from pip-audit over the same exact versions: :download:`sbom/" + VULNERABILITY_FILE + "`.\n\n"]
    out.append(heading("Vulnerability report", "-"))
    kind = "note" if report["status"] == "checked" and not report["vulnerabilities"] else "warning"
    out.append(f".. {kind}::\n\n{indent(report['summary'])}\n\n")
    out.append(f"Scanner: {report['scanner']}. Components: {report['components']}; looked up: {report['checked']}; "
               f"not looked up: {len(report['unchecked'])}.\n\n")
    if report["vulnerabilities"]:
        out.append(list_table(["component", "version", "vulnerability", "fixed in", "description"],
                              [[v["component"], v["version"], v["id"], ", ".join(v["fix_versions"]), v["description"][:200]]
                               for v in report["vulnerabilities"]], [15, 10, 15, 15, 45]))
    if report["status"] != "checked":
        out.append("The vulnerability sources cannot be reached from the build machine, so this build cannot say "
                   "whether the components have known vulnerabilities. Before a release, run ``make sbom`` on a "
                   "machine that reaches PyPI's vulnerability data and attach its report; the release checklist "
                   "(docs/sdp.md) keeps this step open until then.\n\n")
    out.append(heading("Components", "-"))
    rows = []
    for component in bom["components"]:
        licences = "; ".join(l.get("expression") or l.get("license", {}).get("id") or l.get("license", {}).get("name", "")
                             for l in component.get("licenses", [])) or "not stated"
        extra = next((p["value"] for p in component.get("properties", []) if p["name"] == "mammo-cad:extra"), "")
        rows.append([component["name"], component.get("version", ""), licences, extra or "default",
                     component.get("purl", "")])
    out.append(list_table(["component", "version", "licence", "install", "package URL"], rows, [18, 10, 22, 10, 40]))
    return "".join(out)


def generate(out: Path, inputs: DocInputs) -> list[Path]:
    """Write every generated page into ``out`` (and its figures into ``out/_static``)."""
    out.mkdir(parents=True, exist_ok=True)
    static = out
    pages = {
        "srs": srs_page(inputs.trace), "items": architecture_page(inputs.trace), "risk": risk_page(inputs.trace),
        "verification": verification_page(inputs.trace), "traceability": traceability_page(inputs.trace),
        "performance": performance_page(inputs, static), "reader-study-example": reader_study_page(inputs),
        "release-notes": release_notes_page(inputs), "sbom": sbom_page(out / "sbom"),
        "conformance": conformance_page(),
    }
    written = []
    for name, text in pages.items():
        path = out / f"{name}.rst"
        if not path.is_file() or path.read_text() != text:  # unchanged pages keep their mtime
            path.write_text(text)
        written.append(path)
    return written


def default_inputs(trace: Trace, root: Path = REPO_ROOT) -> DocInputs:
    """Inputs found where `make` puts them: the released model, reports/phantom-test, the bundled
    reader study (analysed here with the product's own code)."""
    from verification.readerstudy import FigureOfMerit, Method, analyse, read_reader_study

    performance = root / "reports" / "phantom-test"
    study_path = root / "tests" / "data" / "reader-study" / "vandyke_roc.csv"
    reference_path = root / "tests" / "data" / "reader-study" / "reference_results.json"
    reference = json.loads(reference_path.read_text())["vandyke_roc"] if reference_path.is_file() else None
    reader = None
    if study_path.is_file():
        result = analyse(read_reader_study(study_path), FigureOfMerit.WILCOXON, (Method.OR, Method.DBM), 0.05)
        reader = reader_study_summary(result.to_json(), reference)
    return DocInputs(trace, root / "models" / "phantom-retinanet-r18",
                     performance if (performance / "metrics.json").is_file() else None, reader, reference)


def reader_study_summary(data: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """The figures the example page shows: treatment means and, per analysis, the treatment
    difference with its interval and p, beside RJafroc's p where the reference has it."""
    foms = {f"treatment {t}": v for t, v in data.get("treatment_means", {}).items()}
    rows = []
    for method, analyses in data.get("analyses", {}).items():
        for analysis, block in analyses.items():
            for diff in block.get("differences", []):
                ref_p = _reference_p(reference, f"{method}_{analysis}")
                dof = diff.get("df", block.get("df_den", block.get("df")))
                rows.append([f"{method} {analysis}", fmt(diff.get("estimate"), 4),
                             f"{fmt(diff.get('ci_lower'), 4)} to {fmt(diff.get('ci_upper'), 4)}",
                             fmt(dof, 2), fmt(diff.get("p"), 4), fmt(ref_p, 4)])
    return {"foms": foms, "rows": rows}


def _reference_p(reference: dict[str, Any] | None, key: str) -> float | None:
    """RJafroc's p value of the first treatment difference of an analysis (e.g. ``OR_RRRC``)."""
    block = (reference or {}).get(key)
    if not isinstance(block, dict):
        return None
    table = block.get("diff") or block.get("ftests")
    if not table:
        return None
    columns = table["cols"]
    for name in ("PrGTt", "PrGTz", "p"):
        if name in columns:
            return float(table["values"][0][columns.index(name)])
    return None
