"""Render a study's DICOM outputs for people to look at: the SR as dcmtk shows it, the GSPS over
its images.

    python -m cad_tools.review STUDY_OUTPUT_DIR INPUT_DIR --out REVIEW_DIR

Writes REVIEW_DIR/sr.html (dcmtk ``dsr2html``), REVIEW_DIR/sr.png (headless Chromium screenshot
of it, when Chromium is installed) and REVIEW_DIR/gsps-<laterality><view>.png for every input
image the presentation state references. Development and QA tooling, not part of the device.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import pydicom

from cad.report.outputs import SR_NAME
from cad_tools.render import render_presentation_state

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def render_sr(sr_path: Path, out: Path, width: int = 1100, height: int = 4000) -> list[Path]:
    """sr.html from dsr2html and, with Chromium, its screenshot sr.png."""
    html = out / "sr.html"
    result = subprocess.run(["dsr2html", "-Ec", str(sr_path)], capture_output=True, text=True, check=True)
    html.write_text(result.stdout)
    written = [html]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        png = out / "sr.png"
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                            f"--window-size={width},{height}", f"--screenshot={png}", html.resolve().as_uri()],
                           capture_output=True, check=True, timeout=120)
        written.append(png)
    return written


def render_gsps(pr_path: Path, inputs: Path, out: Path) -> list[Path]:
    pr = pydicom.dcmread(pr_path)
    referenced = {str(i.ReferencedSOPInstanceUID)
                  for series in pr.ReferencedSeriesSequence for i in series.ReferencedImageSequence}
    written = []
    for path in sorted(inputs.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if str(ds.get("SOPInstanceUID", "")) in referenced:
            name = f"gsps-{ds.get('ImageLaterality', '')}{ds.get('ViewPosition', '')}.png"
            written.append(render_presentation_state(path, pr, out / name))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="`cad detect` output folder of one study")
    parser.add_argument("inputs", type=Path, help="folder with the study's input DICOM files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = render_sr(args.study / SR_NAME, args.out)
    for pr in sorted(args.study.glob("cad-pr*.dcm")):  # one per image size
        written += render_gsps(pr, args.inputs, args.out)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
