"""Coverage-guided fuzzing with atheris (libFuzzer): `python -m cad_tools.fuzz TARGET --out DIR
[--runs N] [--seconds S]`, or `all` for every target (what `make fuzz` runs).

Each target runs in its own process under libFuzzer with a per-input time limit (10 s) and a
memory limit (2 GB RSS); the device and tool modules and pydicom are instrumented for coverage.
An input that raises anything but the target's documented errors, hangs or exceeds the memory
limit is saved under DIR/TARGET/ (crash-*, timeout-*, oom-*) and counted. DIR/fuzz-report.json
holds per target: executions, coverage (libFuzzer's edges and features), corpus size, peak
memory, and the saved inputs.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: libFuzzer limits: seconds per input, RSS in MB (the decoded-pixel cap keeps one image under
#: about 0.4 GB; the rest is the interpreter and the instrumented modules)
TIMEOUT_S, RSS_LIMIT_MB, MAX_LEN = 10, 2048, 65536
INSTRUMENTED = ("cad", "verification", "pydicom")
TARGET_MODULES = ("cad.io.dicom_reader", "cad.service.outcomes", "cad.result.findings_json",
                  "verification.readerstudy.io")


def _child(target_name: str, corpus: Path, seeds: Path, artifacts: Path, runs: int, seconds: int) -> None:
    """Fuzz one target in this process (never returns: libFuzzer exits)."""
    import atheris

    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        import importlib

        for module in TARGET_MODULES:
            importlib.import_module(module)
    from cad_tools.fuzz.targets import check, targets

    target = targets()[target_name]

    def one(data: bytes) -> None:
        check(target, data)

    arguments = [sys.argv[0], str(corpus), str(seeds), f"-timeout={TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
                 f"-max_len={MAX_LEN}", f"-artifact_prefix={artifacts}/", "-print_final_stats=1"]
    arguments += [f"-runs={runs}"] if runs else []
    arguments += [f"-max_total_time={seconds}"] if seconds else []
    atheris.Setup(arguments, one)
    atheris.Fuzz()


def _stats(log: str) -> dict[str, Any]:
    stats = {k: int(v) for k, v in re.findall(r"stat::(\w+):\s+(\d+)", log)}
    progress = re.findall(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", log)
    last = progress[-1] if progress else ("0", "0", "0", "0")
    return {"executions": stats.get("number_of_executed_units", int(last[0])),
            "executions_per_second": stats.get("average_exec_per_sec"), "coverage_edges": int(last[1]),
            "features": int(last[2]), "corpus": int(last[3]), "new_units": stats.get("new_units_added"),
            "peak_rss_mb": stats.get("peak_rss_mb")}


def run_target(name: str, out: Path, seeds: Path, runs: int, seconds: int) -> dict[str, Any]:
    folder = out / name
    corpus, artifacts = folder / "corpus", folder / "findings"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cad_tools.fuzz", "--child", name, "--corpus", str(corpus),
                           "--seeds", str(seeds), "--artifacts", str(artifacts), "--runs", str(runs),
                           "--seconds", str(seconds)], capture_output=True, text=True)
    (folder / "libfuzzer.log").write_text(done.stderr[-2_000_000:])
    saved = sorted(p.name for p in artifacts.iterdir())
    return {"target": name, "wall_s": round(time.perf_counter() - began, 1), "exit_code": done.returncode,
            **_stats(done.stderr), "saved_inputs": saved,
            "crashes": sum(n.startswith("crash-") for n in saved),
            "timeouts": sum(n.startswith("timeout-") for n in saved),
            "out_of_memory": sum(n.startswith("oom-") for n in saved)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="ingest, reader-study, jafroc, outcomes, findings, or all")
    parser.add_argument("--out", type=Path, default=Path("reports/fuzz"))
    parser.add_argument("--runs", type=int, default=0, help="executions per target (0: until --seconds)")
    parser.add_argument("--seconds", type=int, default=0, help="time per target (0: until --runs)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--artifacts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.target, args.corpus, args.seeds, args.artifacts, args.runs, args.seconds)
        return 0
    if not args.runs and not args.seconds:
        parser.error("give --runs or --seconds")
    from cad_tools.fuzz.seeds import write_seeds
    from cad_tools.fuzz.targets import targets

    names = list(targets()) if args.target == "all" else [args.target]
    seeds = write_seeds(args.out / "seeds")
    report_path = args.out / "fuzz-report.json"
    report: dict[str, Any] = {}
    for name in names:
        result = run_target(name, args.out, seeds[name], args.runs, args.seconds)
        # read again just before writing: other targets may have reported meanwhile
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        report[name] = result
        report_path.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(result))
    # libFuzzer ends 0 when its runs or time are done; anything else (a saved input, or a death
    # by a signal that left none) is a failed campaign, never a silent pass
    failed = [n for n in names if report[n]["exit_code"] != 0 or report[n]["crashes"] or report[n]["timeouts"]
              or report[n]["out_of_memory"]]
    for name in failed:
        code = report[name]["exit_code"]
        print(f"fuzz {name}: failed (exit {code}{', killed by signal ' + str(-code) if code < 0 else ''}; "
              f"saved inputs: {report[name]['saved_inputs'] or 'none'}; log: {args.out / name / 'libfuzzer.log'})",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
