"""Input- and output-drift demonstration through a real `cad serve`.

`python -m cad_tools.serve_drift_demo --unshifted DIR --shifted DIR --out DIR` starts `cad serve
--watch` with its API on loopback, drops the exams of ``--unshifted`` into the watched folder one
study at a time, then those of ``--shifted`` (for example phantoms of another detector pixel
spacing or bit depth), and after each study reads the service's alerts over the API. Every drift
alert raised during the unshifted studies is a false alarm; for the shifted ones it reports how
many studies (and images) each alert took to fire: the detection delay. The service runs with
the released model's monitoring reference (reference "model") unless ``--monitoring`` says
otherwise. Writes ``drift-demo.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from cad.detect.release import DEVELOPMENT_VARIABLE
from cad_tools.orthanc import free_port
from cad_tools.phantom.generate import exam_files_of

DRIFT_KINDS = ("input-drift", "output-drift")


def _screenshots(base: str, token: str, out: Path) -> list[str]:
    """The dashboard's overview, monitoring and alerts pages as PNG (headless Chromium)."""
    from cad_tools.browser import chromium, save_page, sign_in

    saved = []
    with chromium() as driver:
        sign_in(driver, base, "drift demo", token)
        for page in ("", "monitoring", "alerts"):
            driver.get(f"{base}/ui/{page}")
            saved.append(str(save_page(driver, out / f"dashboard-{page or 'overview'}.png")))
    return saved


def run_demo(unshifted: Path, shifted: Path, out: Path, model: Path | None = None,
             monitoring: Path | None = None, timeout: float = 300.0, screenshots: bool = True,
             unshifted_exams: int | None = None) -> dict[str, Any]:
    """Feed both sets through a fresh `cad serve` and return what it alerted, and when (and,
    with ``screenshots``, save the dashboard's pages at the end)."""
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="drift-demo-"))
    token = secrets.token_urlsafe(24)
    (work / "token").write_text(token + "\n")
    inbox, state = work / "inbox", work / "state"
    inbox.mkdir()
    port = free_port()
    command = [sys.executable, "-m", "cad.cli", "serve", "--state", str(state), "--watch", str(inbox),
               "--quiet-seconds", "0.3", "--poll-seconds", "0.3", "--api", f"127.0.0.1:{port}",
               "--token-file", str(work / "token")]
    command += ["--model", str(model)] if model else []
    command += ["--monitoring", str(monitoring)] if monitoring else []
    log = (out / "serve.log").open("w")
    # a candidate model is demonstrated before any release: the development mode, results marked
    env = {**os.environ, DEVELOPMENT_VARIABLE: "1"} if model else None
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    session = requests.Session()

    def get(path: str) -> Any:
        return session.get(base + path, headers=auth, timeout=10).json()

    steps: list[dict[str, Any]] = []
    first_seen: dict[str, dict[str, Any]] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get("/about")
                break
            except requests.RequestException:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"cad serve did not start (see {out / 'serve.log'})") from None
                time.sleep(0.3)
        about = get("/about")
        feed = ([("unshifted", p) for p in exam_files_of(unshifted)[:unshifted_exams]]
                + [("shifted", p) for p in exam_files_of(shifted)])
        images = 0
        for n, (phase, paths) in enumerate(feed, start=1):
            folder = inbox / f"{n:05d}"
            folder.mkdir()
            for path in paths:
                shutil.copy(path, folder / path.name)
            images += len(paths)
            until = time.monotonic() + timeout
            while True:
                counts = get("/studies?limit=1")["counts"]
                if counts["done"] + counts["failed"] >= n:
                    break
                if time.monotonic() > until or process.poll() is not None:
                    raise RuntimeError(f"study {n} was not analysed in {timeout:g} s (see {out / 'serve.log'})")
                time.sleep(0.2)
            time.sleep(0.1)
            raised = [a for a in get("/alerts?limit=1000")["alerts"] if a["kind"] in DRIFT_KINDS]
            for alert in raised:
                if alert["key"] not in first_seen:
                    first_seen[alert["key"]] = {"key": alert["key"], "kind": alert["kind"], "phase": phase,
                                                "study": n, "images": images, "message": alert["message"]}
            steps.append({"study": n, "phase": phase, "images": images,
                          "open_drift_alerts": sorted(a["key"] for a in raised if a["state"] != "resolved")})
        inputs, output = get("/inputs"), get("/drift")
        pictures = _screenshots(base, token, out) if screenshots else []
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    unshifted_n = sum(s["phase"] == "unshifted" for s in steps)
    window = inputs["window_images"]
    false_alarms = [a for a in first_seen.values() if a["phase"] == "unshifted"]
    detections = [{**a, "delay_studies": a["study"] - unshifted_n,
                   "delay_images": a["images"] - steps[unshifted_n - 1]["images"]}
                  for a in first_seen.values() if a["phase"] == "shifted"]
    report = {
        "unshifted": str(unshifted), "shifted": str(shifted), "model": about.get("model"),
        "model_sha256": about.get("model_sha256"), "monitoring": about.get("monitoring"),
        "monitoring_reference": about.get("monitoring_reference"),
        "studies": {"unshifted": unshifted_n, "shifted": len(steps) - unshifted_n},
        # input drift is checked per device once its window is full, after every later study
        "input_checks_on_unshifted": sum(1 for s in steps if s["phase"] == "unshifted" and s["images"] >= window),
        "false_alarms": false_alarms,
        "detections": sorted(detections, key=lambda d: (d["delay_studies"], d["key"])),
        "final_inputs": inputs, "final_output_drift": output, "screenshots": pictures, "steps": steps,
    }
    (out / "drift-demo.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unshifted", type=Path, required=True, help="exams like the validation set")
    parser.add_argument("--shifted", type=Path, required=True, help="exams whose images differ")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--monitoring", type=Path)
    parser.add_argument("--unshifted-exams", type=int, help="only the first N unshifted exams")
    parser.add_argument("--no-screenshots", action="store_true", help="do not save the dashboard's pages")
    args = parser.parse_args(argv)
    report = run_demo(args.unshifted, args.shifted, args.out, args.model, args.monitoring,
                      screenshots=not args.no_screenshots, unshifted_exams=args.unshifted_exams)
    print(f"unshifted studies {report['studies']['unshifted']}, input-drift checks after the window filled "
          f"{report['input_checks_on_unshifted']}: false alarms {len(report['false_alarms'])}")
    for alarm in report["false_alarms"]:
        print(f"  FALSE ALARM at study {alarm['study']}: {alarm['key']}")
    print(f"shifted studies {report['studies']['shifted']}: alerts and their delay")
    for found in report["detections"]:
        print(f"  {found['key']}: after {found['delay_studies']} shifted studies ({found['delay_images']} images)")
    print(f"written: {args.out / 'drift-demo.json'}")


if __name__ == "__main__":
    main()
