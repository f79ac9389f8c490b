"""The `cad` command line of the device: inspect, detect, export, serve, audit, outcomes.

Parse, call, print: the work is in the modules. Development and QA verbs (phantom, train,
bench, evaluate, reader-study, trace) are added by the tooling's ``cad.commands`` plugin where
it is installed (:func:`load_plugins`).

Exit codes (all verbs): 0 success; 1 nothing could be analysed (every input refused; for
`cad batch` and `cad serve --once` a study failed or a source was unreachable; for `cad audit
verify` the log was altered); 2 usage error (bad option, missing input, an output location that
is not a writable folder, or a runtime that cannot run here); 3 the locked model (weights or its
ONNX export) failed verification; 4 (`cad detect`) images were analysed but a study's DICOM
outputs (SR, presentation state) could not be written; 5 analysed, but not every image: some
were not analysed (each listed, with why) and those studies' results are incomplete; 6 the
machine could not do what was asked (no space left to write the outputs, a port that cannot be
opened). Problems go to stderr, one line each, naming the file as the user gave it and the
problem; no patient identifier is ever printed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

import cad
from cad.errors import CadError, EnvironmentProblem, ExitCode

if TYPE_CHECKING:
    from cad.detect.locked import LockedModel
    from cad.detect.runtime import Runtime

#: libraries whose INFO/DEBUG output may carry identifiers (UIDs, header dumps)
log = logging.getLogger("cad.cli")
#: (and the level each is held at: pydicom's warnings quote raw header values, which may be a
#: patient's name, so only its errors pass, as ingest itself sets it)
QUIET_LOGGERS = {"dicomweb_client": logging.WARNING, "highdicom": logging.WARNING, "pynetdicom": logging.WARNING,
                 "pydicom": logging.ERROR, "uvicorn": logging.WARNING, "httpx": logging.WARNING}

# the exit codes (cad.errors.ExitCode), by the names the verbs use
EXIT_OK = ExitCode.OK
EXIT_NOTHING_ANALYSED = ExitCode.NOTHING_ANALYSED
EXIT_USAGE = ExitCode.USAGE
EXIT_MODEL = ExitCode.MODEL
EXIT_OUTPUTS_INCOMPLETE = ExitCode.OUTPUTS_INCOMPLETE
EXIT_INCOMPLETE = ExitCode.INCOMPLETE
EXIT_ENVIRONMENT = ExitCode.ENVIRONMENT

app = typer.Typer(
    name="cad",
    help=f"Mammography CADe {cad.__version__}: dual-view mass detection on screening mammograms. "
    "Not for clinical use (trained and verified on synthetic phantoms only); see the instructions for use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: it wraps option names and help at any width; rich's tables cut long
    # option names (`--dicomweb-auth…`) at 80 columns
    rich_markup_mode=None,
)
console = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)  # messages name files: no markup


class StateUnwritable(EnvironmentProblem):
    """The state database, ledger or report cannot be written (its disk full or read-only)."""


#: the `--model` option of every verb that runs a locked model (declared once)
ModelOption = Annotated[Path | None, typer.Option(
    "--model", help="Locked model folder (default: CAD_MODEL_DIR, else the released model installed with the software).")]


def usage_error(message: str) -> typer.Exit:
    """Print ``error: message`` (one line) and give the usage exit to raise."""
    err.print(f"error: {message}")
    return typer.Exit(EXIT_USAGE)


def _first_existing(path: Path) -> Path:
    """``path`` itself, or the nearest of its parents that exists (what creating it would write in)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _writable_location(path: Path, option: str, folder: bool) -> None:
    """Exit 2 with one line unless ``path`` can be written as a folder (``folder``) or a file: it
    is one already, or the nearest existing parent is a folder this process may write in. Checked
    before any work, so that no analysis runs only to fail at its end."""
    if path.exists():
        if folder and not path.is_dir():
            raise usage_error(f"{option} {path}: exists and is not a folder")
        if not folder and path.is_dir():
            raise usage_error(f"{option} {path}: is a folder, not a file")
        target = path if folder else path.parent
    else:
        target = _first_existing(path.parent)
        if not target.is_dir():
            raise usage_error(f"{option} {path}: {target} is not a folder")
    if not os.access(target, os.W_OK | os.X_OK):
        raise usage_error(f"{option} {path}: cannot write in {target} (permission denied or read-only)")


def _option_name(param: Any) -> str:
    return str(param.opts[0]) if getattr(param, "opts", None) else str(getattr(param, "name", "output"))


def check_output_folder(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Option callback: an output or state folder must be (or be creatable as) a writable folder."""
    if value is not None and not ctx.resilient_parsing:
        _writable_location(value, _option_name(param), folder=True)
    return value


def check_output_file(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Option callback: an output file must be writable and not a folder."""
    if value is not None and not ctx.resilient_parsing:
        _writable_location(value, _option_name(param), folder=False)
    return value


def check_existing_folder(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """Option callback: a folder read by the verb (e.g. the state of `cad serve`) must be a folder."""
    if value is not None and not ctx.resilient_parsing:
        if not value.exists():
            raise usage_error(f"{_option_name(param)} {value}: no such folder")
        if not value.is_dir():
            raise usage_error(f"{_option_name(param)} {value}: exists and is not a folder")
    return value


def output_folder_option(help_text: str, name: str = "--out") -> Any:
    """An option naming a folder the verb writes (checked before any work: exit 2, one line)."""
    return typer.Option(name, help=help_text, callback=check_output_folder, is_eager=True)


def output_file_option(help_text: str, name: str) -> Any:
    """An option naming a file the verb writes (checked before any work: exit 2, one line)."""
    return typer.Option(name, help=help_text, callback=check_output_file, is_eager=True)


def state_folder_option(help_text: str) -> Any:
    """``--state`` of a verb that reads an existing service state folder."""
    return typer.Option("--state", help=help_text, callback=check_existing_folder, is_eager=True)


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``1 record``, ``2 records``, ``1 study``, ``3 studies``."""
    return f"{count} {singular if count == 1 else many or singular + 's'}"


def require_existing(paths: list[Path]) -> None:
    """One error line per missing input, then a usage exit; nothing is analysed."""
    missing = [p for p in paths if not p.exists()]
    for path in missing:
        err.print(f"error: {path}: no such file or folder")
    if missing:
        raise typer.Exit(EXIT_USAGE)


def _check_runtime_name(runtime: str) -> None:
    """A usage error unless ``runtime`` is empty (the default) or a known runtime."""
    from cad.detect.runtime import RuntimeName

    names = [r.value for r in RuntimeName]
    if runtime and runtime not in names:
        err.print(f"error: --runtime {runtime}: use {', '.join(names)}")
        raise typer.Exit(EXIT_USAGE)


def verified_model(model: Path | None, released_only: bool = True) -> LockedModel:
    """The locked model, verified against its manifest and, for analysis (``released_only``),
    against the models this release was verified with (RC-002); exit 3 otherwise. An unreleased
    model in development mode runs with a warning on every run."""
    from cad.detect.locked import load_locked_model
    from cad.detect.release import DEVELOPMENT_VARIABLE, require_released

    locked = load_locked_model(model)
    if released_only and not require_released(locked):
        err.print(f"warning: {locked.name} is not a released model ({DEVELOPMENT_VARIABLE}=1): development "
                  "mode, results are marked unreleased and are not for clinical use")
        log.warning("unreleased model %s (weights %s…) run in development mode", locked.name, locked.sha256[:16])
    return locked


def _verified_model_and_runtime(model: Path | None, runtime: str) -> tuple[LockedModel, Runtime]:
    """The locked model, verified (exit 3 otherwise), and its runtime (exit 3 if its export fails
    verification, 2 if it cannot run here)."""
    from cad.detect.runtime import DEFAULT_RUNTIME, RuntimeUnavailableError, make_runtime

    locked = verified_model(model)
    try:
        return locked, make_runtime(locked, runtime or DEFAULT_RUNTIME)
    except RuntimeUnavailableError as exc:  # named with the option that asked for it
        raise RuntimeUnavailableError(f"--runtime {runtime}: {exc}") from None


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # third-party libraries log full UIDs and DICOM headers at INFO/DEBUG; the product's own
    # log lines name a study only by the tail of its UID and never a patient
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


@app.command()
def inspect(
    inputs: Annotated[list[Path], typer.Argument(help="DICOM files or folders.")],
    out: Annotated[Path | None, output_folder_option("Write geometry overlay PNGs here.")] = None,
    truth: Annotated[
        Path | None, typer.Option("--truth", help="truth.json whose lesion boxes to draw.")
    ] = None,
) -> None:
    """Ingest mammograms, report each image's status and breast geometry, draw overlays."""
    from cad.io import load
    from cad.io.uids import uid_tail
    from cad.preprocess import compute_geometry
    from cad.preprocess.geometry import OrientationMismatchError
    from cad.preprocess.mask import NoBreastError
    from cad.report.overlay_drawing import overlay_name, reference_marks, render_overlay

    require_existing(inputs)
    truth_boxes = reference_marks(truth) if truth is not None else {}
    result = load(inputs)
    refused: list[str] = []
    table = Table(title="Ingest", show_lines=False)
    for column in ("study", "image", "lat", "view", "spacing mm", "status"):
        table.add_column(column)
    written: list[Path] = []
    for study in result.studies:
        short_study = uid_tail(study.study_instance_uid)
        for image in study.images:
            try:
                geometry = compute_geometry(image)
            except (NoBreastError, OrientationMismatchError) as exc:  # what `cad detect` records as not analysed
                table.add_row(short_study, image.path.name, image.laterality.value, image.view.value,
                              f"{image.spacing.row_mm:g} ({image.spacing.source})", f"not analysed: {exc}")
                refused.append(f"not analysed: {image.path}: {exc}")
                continue
            notes = "; ".join((*image.warnings, *geometry.warnings))
            table.add_row(
                short_study,
                image.path.name,
                image.laterality.value,
                image.view.value,
                f"{image.spacing.row_mm:g} ({image.spacing.source})",
                "analysed" + (f" ({notes})" if notes else ""),
            )
            if out is not None:
                name = overlay_name(image.laterality.value, image.view.value, image.sop_instance_uid)
                written.append(
                    render_overlay(
                        image, geometry, truth_boxes.get(image.sop_instance_uid, []),
                        out / study.study_instance_uid / name,
                    )
                )
    for failure in result.not_analysed:
        ref = failure.ref
        table.add_row(
            uid_tail(ref.study_instance_uid) if ref.study_instance_uid else "?",
            ref.path.name,
            ref.laterality.value if ref.laterality else "?",
            ref.view.value if ref.view else "?",
            "",
            f"not analysed: {failure.message}",
        )
        refused.append(f"not analysed: {failure}")
    for line in refused:
        err.print(line)
    for failure in result.not_mammograms:
        err.print(f"skipped: {failure}")
    console.print(table)
    if written:
        console.print(f"overlays: {out} ({len(written)} PNG)")
    if not result.images:
        err.print("error: nothing could be analysed")
        raise typer.Exit(EXIT_NOTHING_ANALYSED)
    if refused:
        err.print(f"incomplete: {plural(len(refused), 'file')} not analysed (listed above)")
        raise typer.Exit(EXIT_INCOMPLETE)


@app.command()
def detect(
    inputs: Annotated[list[Path], typer.Argument(help="DICOM files or folders (one or many studies).")],
    out: Annotated[Path, output_folder_option(
        "Output folder: <StudyInstanceUID>/findings.json, cad-sr.dcm, cad-pr.dcm, overlays/.")],
    model: ModelOption = None,
    overlays: Annotated[bool, typer.Option("--overlays/--no-overlays", help="Write overlay PNGs.")] = True,
    runtime: Annotated[str, typer.Option(
        "--runtime",
        help="Network runtime: onnxruntime (default), torch, tensorrt, or an accepted variant (onnxruntime-int8).")] = "",
    batch_exams: Annotated[int, typer.Option(
        "--batch-exams", min=1, help="Studies analysed together (their equal-size views share network batches).")] = 1,
) -> None:
    """Detect masses on every view, link CC/MLO findings; write findings.json, a Mammography CAD SR,
    a presentation state and overlays per study."""
    from cad.io import load
    from cad.io.uids import uid_tail
    from cad.job import DetectRun, OutputsNotWritten, StudyState
    from cad.result.model import shown_score
    from cad.stages import Stage

    _check_runtime_name(runtime)
    require_existing(inputs)
    locked, engine = _verified_model_and_runtime(model, runtime)
    run = DetectRun(locked, engine, out, overlays, batch_exams)
    started = time.perf_counter(), time.process_time()
    with run.clock.stage(Stage.DECODE):
        result = load(inputs)
    threshold = shown_score(locked.operating_threshold)
    table = Table(title=f"CAD {locked.name} (model {locked.sha256[:12]})", box=box.SIMPLE_HEAD)
    for column in ("study", "images analysed", "not analysed", "CAD marks", "linked", "candidates", "DICOM"):
        table.add_column(column, no_wrap=column not in ("images analysed", "not analysed"))
    try:
        for outcome in run.run(result, started):
            study = outcome.result
            table.add_row(uid_tail(study.study_instance_uid), str(outcome.images_analysed),
                          str(outcome.images_not_analysed), str(len(study.marks)),
                          str(sum(f.linked for f in study.marks)), str(len(study.findings) - len(study.marks)),
                          outcome.dicom_summary())
            for line in outcome.problems:
                err.print(str(line))
    except OutputsNotWritten as exc:  # the studies written so far are complete; the rest were not analysed
        if run.outcomes:
            console.print(table)
        err.print(f"error: {exc}; {plural(len(run.outcomes), 'study', 'studies')} of "
                  f"{len(result.studies)} written; free space and run `cad detect` again")
        raise typer.Exit(EXIT_ENVIRONMENT) from None
    for failure in result.unassigned_failures:  # not DICOM: it might have been a mammogram
        err.print(f"not analysed: {failure}")
    for failure in result.not_mammograms:
        err.print(f"skipped: {failure}")
    console.print(table)
    console.print(f"CAD marks: findings scoring ≥ {threshold} (the operating point), shown to readers in the SR, "
                  "presentation state and overlays; linked: marks joined across CC and MLO; candidates: findings "
                  f"below {threshold}, kept in findings.json for performance analysis only.")
    if result.studies:
        summary = run.summary
        console.print(f"analysis time per study: {summary['mean_wall_seconds_per_study']:.2f} s wall, "
                      f"{summary['mean_cpu_seconds_per_study']:.2f} s CPU ({summary['threads']} threads, "
                      f"{engine.name}, ingest to outputs)")
    incomplete = [o for o in run.outcomes if o.state is StudyState.INCOMPLETE]
    if result.not_mammograms:
        console.print(f"skipped {plural(len(result.not_mammograms), 'file')} that are not mammograms (listed above)")
    console.print(f"results: {out}")
    if not run.images_analysed:
        err.print("error: nothing could be analysed")
        raise typer.Exit(EXIT_NOTHING_ANALYSED)
    if run.dicom_failed:
        err.print(f"error: the DICOM outputs of {plural(run.dicom_failed, 'study', 'studies')} could not be written "
                  "(see above); their findings.json is complete")
        raise typer.Exit(EXIT_OUTPUTS_INCOMPLETE)
    if incomplete or result.unassigned_failures:
        images = sum(o.images_not_analysed for o in incomplete)
        parts = ([f"{plural(images, 'image')} of {plural(len(incomplete), 'study', 'studies')}"] if incomplete else []) + (
            [f"{plural(len(result.unassigned_failures), 'file')} that could not be read"]
            if result.unassigned_failures else [])
        err.print(f"incomplete: {' and '.join(parts)} not analysed (listed above); the results of the rest are complete")
        raise typer.Exit(EXIT_INCOMPLETE)


@app.command()
def serve(
    state: Annotated[Path, output_folder_option("State folder: job queue, audit log, received and result files.",
                                                "--state")],
    dicomweb: Annotated[str | None, typer.Option(
        "--dicomweb", help="DICOMweb root of the PACS (QIDO/WADO/STOW), e.g. http://pacs:8042/dicom-web.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only studies from this date on (YYYYMMDD).")] = None,
    watch: Annotated[Path | None, typer.Option(
        "--watch", help="Folder to watch: studies dropped in it are analysed, results written beside them.")] = None,
    scp: Annotated[str | None, typer.Option("--scp", help="Receive pushed studies as a C-STORE SCP: AET:PORT.")] = None,
    scp_allow: Annotated[str | None, typer.Option(
        "--scp-allow", help="Comma-separated calling AE titles the SCP accepts (default: any).")] = None,
    dicomweb_auth_file: Annotated[Path | None, typer.Option(
        "--dicomweb-auth-file", help="File with the Authorization header value for the PACS (Bearer ... or Basic ...).")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="HTTPS certificate (PEM) for the API.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="HTTPS private key (PEM) for the API.")] = None,
    send: Annotated[str | None, typer.Option(
        "--send", help="Deliver SR and GSPS with C-STORE to AET@HOST:PORT (default: back over DICOMweb).")] = None,
    api: Annotated[str | None, typer.Option("--api", help="Serve the HTTP API on HOST:PORT (needs --token-file).")] = None,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="File holding the API bearer token.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Analyse everything pending, then exit.")] = False,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=0.1, help="PACS/folder polling interval.")] = 30.0,
    quiet_seconds: Annotated[float, typer.Option(
        "--quiet-seconds", min=0.0, help="A pushed or dropped study is complete after this long without new files.")
    ] = 10.0,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, help="Tries per study when the PACS errs.")] = 5,
    retry_seconds: Annotated[float, typer.Option(
        "--retry-seconds", min=0.0, help="First retry delay; doubles per attempt (capped at 5 min).")] = 2.0,
    runtime: Annotated[str, typer.Option(
        "--runtime", help="Network runtime: onnxruntime, torch, tensorrt, or an accepted variant.")] = "",
    model: ModelOption = None,
    late_after: Annotated[float | None, typer.Option(
        "--late-after", min=1.0,
        help="Alert when a study waits or runs longer than this many seconds (RC-029; default 900, or --monitoring's).")
    ] = None,
    alert_webhook: Annotated[str | None, typer.Option(
        "--alert-webhook", help="POST each new alert as JSON to this URL (a chat or paging gateway).")] = None,
    sensitivity_floor: Annotated[float | None, typer.Option(
        "--sensitivity-floor", help="Alert when sensitivity against imported outcomes falls below this fraction.")
    ] = None,
    overlays: Annotated[bool, typer.Option(
        "--overlays/--no-overlays", help="Keep overlay PNGs with each result for the dashboard (about 1 MB a study).")
    ] = True,
    monitoring: Annotated[Path | None, typer.Option(
        "--monitoring", help="Monitoring and alert thresholds (TOML; docs/examples/monitoring.toml). "
                             "--late-after and --sensitivity-floor win over it.")] = None,
) -> None:
    """Run the CAD as a service: find new MG studies (DICOMweb polling, C-STORE, or a watched
    folder), analyse each (study, instance set) exactly once, deliver SR and GSPS, audit every
    analysis. Exit codes: 0 done; 1 (--once) a study failed or a source was unreachable;
    2 usage; 3 model verification failed; 5 (--once) a study's result is incomplete (images
    not analysed); 6 a port could not be opened, or the outputs or state could not be stored."""
    from cad.service import store
    from cad.service.queue import FAILED, RetryPolicy
    from cad.service.service import ListenerError, Service, ServiceConfig

    logging.getLogger("cad").setLevel(logging.INFO)  # a service reports what it does
    _check_runtime_name(runtime)
    config = ServiceConfig.from_options(
        state, dicomweb=dicomweb, since=since, watch=watch, scp=scp, scp_allow=scp_allow,
        dicomweb_auth_file=dicomweb_auth_file, tls_cert=tls_cert, tls_key=tls_key, send=send, api=api,
        token_file=token_file, poll_seconds=poll_seconds, quiet_seconds=quiet_seconds,
        retry=RetryPolicy(max_attempts=max_attempts, base_seconds=retry_seconds), late_seconds=late_after,
        alert_webhook=alert_webhook, sensitivity_floor=sensitivity_floor, overlays=overlays, monitoring=monitoring)
    locked, engine = _verified_model_and_runtime(model, runtime)
    service = Service(config, locked, engine)
    try:
        counts = service.run(once=once)
    except ListenerError as exc:
        raise ListenerError(f"{exc}; the service stopped (nothing was analysed)") from None
    except sqlite3.OperationalError as exc:  # the state database cannot be written: nothing can be recorded
        if "disk" not in str(exc) and "readonly" not in str(exc):
            raise
        raise StateUnwritable(f"{state / store.DATABASE}: {exc}; the service stopped (jobs are kept)") from None
    finally:
        service.close()
    console.print("jobs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    unreachable = [name for name, ok in service.last_poll_ok.items() if not ok]
    for name in unreachable:
        err.print(f"error: {name}: could not be reached at the last poll")
    if service.worker.storage_problem:
        err.print(f"error: {service.worker.storage_problem}; the study waits in the queue for the next run")
        raise typer.Exit(EXIT_ENVIRONMENT)
    if once and (counts[FAILED] or unreachable):
        raise typer.Exit(EXIT_NOTHING_ANALYSED)
    if once and service.worker.incomplete:
        err.print(f"incomplete: {plural(service.worker.incomplete, 'study', 'studies')} with images not analysed "
                  "(see the log and each result)")
        raise typer.Exit(EXIT_INCOMPLETE)


@app.command()
def deidentify(
    inputs: Annotated[list[Path], typer.Argument(help="DICOM files or folders to export.")],
    out: Annotated[Path, output_folder_option("Folder for the de-identified files and the report.")],
    secret_file: Annotated[Path, typer.Option(
        "--secret-file", help="File with the site's de-identification secret (16+ characters): the same secret gives "
                              "the same identifiers, across runs.")],
) -> None:
    """De-identify cases before they leave the site (PS3.15 Basic Profile by dicognito, UIDs
    remapped and dates shifted consistently from the secret, pixels outside the breast cleaned
    of burned-in text). Images whose text cannot be checked are refused with the reason.
    Exit 0: every file exported; 1: some refused (listed here and, by position, in the report)."""
    from cad.deid.export import REPORT_FILE, read_secret
    from cad.deid.export import deidentify as run_export
    from cad.io.loader import iter_input_files

    require_existing([*inputs, secret_file])
    report = run_export(inputs, out, read_secret(secret_file))
    sources = list(iter_input_files(inputs))
    for number, reason in report.refused:  # on the site's console only: source names stay here
        err.print(f"error: {sources[number - 1]}: not exported: {reason}")
    console.print(f"{len(report.exported)} exported, {len(report.refused)} refused; report: {out / REPORT_FILE}")
    if report.refused:
        raise typer.Exit(EXIT_NOTHING_ANALYSED)


@app.command()
def batch(
    out: Annotated[Path, output_folder_option(
        "Output folder: <StudyInstanceUID>/ as `cad detect` writes it, the run ledger and report.")],
    inputs: Annotated[list[Path] | None, typer.Argument(
        help="Archive: folders of DICOM files, files, or manifest CSVs (column 'path').")] = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="Where studies run: local (processes on this machine) or ray (a Ray cluster; the batch extra).")
    ] = "local",
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster address (ray://host:10001 or host:6379); default: a local Ray instance.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes (each loads the model once).")] = 1,
    timeout_s: Annotated[float, typer.Option(
        "--timeout", min=1.0, help="Seconds after which a study is stopped and recorded failed.")] = 600.0,
    overlays: Annotated[bool, typer.Option("--overlays/--no-overlays", help="Write overlay PNGs.")] = False,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed/--no-retry-failed", help="Try studies that failed in an earlier run again.")] = True,
    runtime: Annotated[str, typer.Option("--runtime", help="Network runtime (default onnxruntime).")] = "",
    model: ModelOption = None,
    dicomweb: Annotated[str | None, typer.Option(
        "--dicomweb", help="Archive on a PACS: its DICOMweb root (QIDO-RS finds MG studies, workers fetch with WADO-RS).")
    ] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="With --dicomweb: only studies on or after this date (YYYYMMDD).")] = None,
    dicomweb_auth_file: Annotated[Path | None, typer.Option(
        "--dicomweb-auth-file", help="File with the Authorization header value for the PACS (Bearer ... or Basic ...).")
    ] = None,
) -> None:
    """Analyse an archive study by study, resumable and exactly once: outputs as `cad detect`
    writes them, a durable ledger (re-run with the same arguments to finish an interrupted run:
    only what is missing is done), and batch-report.json. Exit 0: every study done; 1: some
    failed (see the report); 2 usage; 3 model verification failed; 5 some studies are incomplete
    (images not analysed) or files could not be read; 6 no space left for the outputs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from cad.batch.discover import Archive, discover, discover_dicomweb
    from cad.batch.engines import EngineConfig, LocalEngine, RayEngine
    from cad.batch.ledger import FAILED, Outcome
    from cad.batch.run import run_batch
    from cad.io import atomic
    from cad.io.dicomweb import DicomWeb, PacsError, read_authorization

    _check_runtime_name(runtime)
    inputs = inputs or []
    require_existing(inputs + ([dicomweb_auth_file] if dicomweb_auth_file else []))
    problem = ("give an archive: folders, files or manifest CSVs, or --dicomweb URL" if not inputs and not dicomweb
               else f"--engine {engine}: use local or ray" if engine not in ("local", "ray")
               else "--since and --dicomweb-auth-file go with --dicomweb" if (since or dicomweb_auth_file) and not dicomweb
               else f"--since {since}: use YYYYMMDD" if since and not (len(since) == 8 and since.isdigit()) else None)
    if problem:
        err.print(f"error: {problem}")
        raise typer.Exit(EXIT_USAGE)
    auth = read_authorization(dicomweb_auth_file) if dicomweb_auth_file else None
    verified_model(model)  # refuse before any worker starts
    config = EngineConfig(str(model.resolve()) if model else None, runtime, out.resolve(), overlays, workers,
                          timeout_s, dicomweb=dicomweb, dicomweb_auth=auth)

    def find() -> Archive:
        archive = discover(inputs) if inputs else Archive()
        if dicomweb:
            archive.extend(discover_dicomweb(DicomWeb(dicomweb, headers={"Authorization": auth} if auth else None),
                                             since))
        return archive

    runner: LocalEngine | RayEngine = RayEngine(config, address) if engine == "ray" else LocalEngine(config)
    columns = (TextColumn("[bold]studies"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    started = time.perf_counter()
    try:
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task("batch", total=None, rate="")

            def progress(finished: int, total: int, outcome: Outcome | None) -> None:
                elapsed = time.perf_counter() - started
                rate = f"{3600 * finished / elapsed:,.0f} studies/h" if finished and elapsed else ""
                bar.update(task, total=total, completed=finished, rate=rate)
                if outcome is not None and outcome.reason:
                    for line in outcome.record.get("not_analysed", []):
                        bar.console.print(f"not analysed: {line}")
                    what = "failed" if outcome.state == FAILED else "incomplete"
                    bar.console.print(f"{what}: study …{outcome.study_uid[-8:]}: {outcome.reason}")

            summary = run_batch(find, out, runner, progress, retry_failed)
    except PacsError as exc:  # the archive could not be listed: nothing was analysed
        raise PacsError(f"{dicomweb}: {exc}") from None
    except (OSError, sqlite3.OperationalError) as exc:  # the ledger or report could not be written
        if not (atomic.is_environment_error(exc) or "disk" in str(exc)):
            raise
        why = atomic.describe(exc) if isinstance(exc, OSError) else str(exc)
        raise StateUnwritable(f"{out}: {why}: the run stopped; studies done so far are kept; free space and run the "
                              "same command again") from None
    finally:
        runner.close()
    for entry in summary["files_not_analysed"]:
        err.print(f"not analysed: {entry['file']}: {entry['reason']}")
    for entry in summary["files_not_mammograms"]:
        err.print(f"skipped: {entry['file']}: {entry['reason']}")
    incomplete = summary["studies_incomplete_this_run"]
    console.print(f"studies: {summary['studies_discovered']} found, {summary['studies_done_this_run']} done "
                  f"({incomplete} of them incomplete: not every image analysed), "
                  f"{summary['studies_failed_this_run']} failed, {summary['skipped_already_done']} already done; "
                  f"files: {len(summary['files_not_analysed'])} not analysed (not readable as DICOM), "
                  f"{len(summary['files_not_mammograms'])} skipped (not mammograms); report: {out / 'batch-report.json'}")
    if summary["stopped"]:
        err.print(f"error: {out}: {summary['stopped']}: the run stopped; {summary['pending_left']} "
                  f"{'study was' if summary['pending_left'] == 1 else 'studies were'} left for the next run; studies done "
                  "so far are kept; free space and run the same command again")
        raise typer.Exit(EXIT_ENVIRONMENT)
    if summary["studies_failed_this_run"] or summary["ledger"]["failed"]:
        raise typer.Exit(EXIT_NOTHING_ANALYSED)
    if summary["incomplete_in_ledger"] or summary["files_not_analysed"]:
        err.print(f"incomplete: {plural(summary['incomplete_in_ledger'], 'study', 'studies')} with images not analysed "
                  f"and {plural(len(summary['files_not_analysed']), 'file')} not readable (see above and the report)")
        raise typer.Exit(EXIT_INCOMPLETE)


outcomes_app = typer.Typer(help="Radiologists' outcomes and the CAD's performance against them.", no_args_is_help=True,
                           rich_markup_mode=None)
app.add_typer(outcomes_app, name="outcomes")


@outcomes_app.command("import")
def outcomes_import(
    csv_file: Annotated[Path, typer.Argument(help="Outcomes CSV (docs/service.md, Outcomes).")],
    state: Annotated[Path, output_folder_option("State folder of `cad serve` (made when absent).", "--state")],
) -> None:
    """Import outcomes: good rows are stored (UIDs and coded values only), each bad row is refused
    with one line. Exit 0 when rows were imported, 1 when none could be, 2 when the file cannot be read."""
    from cad.service import store
    from cad.service.outcomes import import_file

    require_existing([csv_file])
    with closing(store.connect(state)) as connection:
        report = import_file(connection, csv_file)
    for line in report.refused:
        err.print(f"refused: {line}")
    if report.ignored_columns:
        err.print(f"note: {csv_file}: columns not read (not part of the format): {', '.join(report.ignored_columns)}")
    console.print(f"imported {report.imported} outcome(s); refused {len(report.refused)}")
    if not report.imported:
        raise typer.Exit(EXIT_NOTHING_ANALYSED)


@outcomes_app.command("report")
def outcomes_report(
    state: Annotated[Path, state_folder_option("State folder of `cad serve`.")],
    window_days: Annotated[float, typer.Option("--window-days", min=1.0, help="Studies analysed in the last N days.")
                           ] = 365.0,
) -> None:
    """Exam-level sensitivity, specificity and CAD-positive rates against the imported outcomes,
    with exact 95 % intervals, as JSON."""
    from cad.service import store
    from cad.service.outcomes import performance

    with closing(store.connect(state)) as connection:
        console.print_json(data=performance(connection, window_days))


audit_app = typer.Typer(help="The service's audit log (hash-chained, append-only).", no_args_is_help=True,
                           rich_markup_mode=None)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    state: Annotated[Path, state_folder_option("State folder of `cad serve`.")],
) -> None:
    """Recompute the audit log's hash chain; exit 1 and list the problems if it was altered."""
    from cad.service import audit, store

    require_existing([state / store.DATABASE])
    result = audit.verify(store.connect(state))
    for problem in result.problems:
        err.print(f"error: {state / store.DATABASE}: {problem}")
    console.print(f"{plural(result.records, 'record')}, head SHA-256 {result.head_sha256}: "
                  + ("intact" if result.intact else "NOT intact"))
    if not result.intact:
        raise typer.Exit(EXIT_NOTHING_ANALYSED)


@audit_app.command("show")
def audit_show(
    state: Annotated[Path, state_folder_option("State folder of `cad serve`.")],
    study: Annotated[str | None, typer.Option("--study", help="Only this StudyInstanceUID.")] = None,
) -> None:
    """Print the audit records (JSON lines, oldest first)."""
    from cad.service import audit, store

    require_existing([state / store.DATABASE])
    for record in audit.records(store.connect(state), study):
        typer.echo(json.dumps(record, sort_keys=True))


#: entry-point group through which installed tooling adds its verbs (phantom, train, bench,
#: evaluate, reader-study, trace: :mod:`cad_tools.cli`); the device never imports it by name
COMMAND_PLUGINS = "cad.commands"


def load_plugins() -> None:
    """Register the verbs of every installed ``cad.commands`` plugin (the torch side's `cad
    export`, development and QA tooling); a plugin whose dependencies are not installed adds
    nothing. Where nothing adds `cad export`, the verb says what it needs."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=COMMAND_PLUGINS):
        try:
            register = entry.load()
        except ImportError:
            continue
        register(app)
    if not any(command.name == "export" for command in app.registered_commands):
        app.command("export", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                    add_help_option=False)(export_not_installed)


def export_not_installed() -> None:
    """Export the locked model (ONNX, int8, TensorRT): needs the torch side (mammo-cad-torch)."""
    err.print("error: cad export makes the exports from the PyTorch weights and needs the torch side "
              "(pip install mammo-cad-torch); a site install runs the exports shipped with the model")
    raise typer.Exit(EXIT_USAGE)


def main() -> None:
    """Console entry point."""
    from cad.report.outputs import creation_instant

    try:
        creation_instant()  # before any import that reads it (numpy's f2py fails on a malformed value)
        load_plugins()
        app(standalone_mode=True)
    except CadError as exc:  # one line and the exit code of the error's kind (cad.errors)
        err.print(f"error: {exc}")
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":  # pragma: no cover
    main()
