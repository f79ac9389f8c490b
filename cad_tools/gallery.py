"""A gallery of found and missed lesions for people to look at (QA tooling, not the device).

    python -m cad_tools.gallery --truth T --findings DIR --out gallery.png [--missed 10 --found 10]

Each tile is a 60 mm crop of the displayed image around one lesion view (masses of at least
8 mm): the truth box in yellow, every finding's box on that view in blue (at or above the
operating point) or thin grey (below it, with its score), and a caption with the lesion's size,
shape, density, the ideal observer's visibility and the best score that localises it. "Found"
means a finding at or above the operating point localises the lesion (the evaluation's rule).
Tiles are drawn in a seeded random order so the gallery is the same for the same inputs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cad.io.dicom_reader import read_image
from verification.froc import localises

TILE = 300
CROP_MM = 60.0


def _lesion_views(truth: dict[str, Any], findings: dict[str, dict[str, Any]], folder: Path,
                  min_diameter_mm: float) -> list[dict[str, Any]]:
    out = []
    for exam in truth["exams"]:
        data = findings.get(exam["study_instance_uid"])
        if data is None:
            continue
        threshold = float(data["operating_point"]["threshold"])
        paths = {im["sop_instance_uid"]: folder / im["path"] for im in exam["images"]}
        for lesion in exam["lesions"]:
            if lesion["type"] != "mass" or lesion["diameter_mm"] < min_diameter_mm:
                continue
            for view in lesion["views"]:
                marks = [(v["box"], f["score"]) for f in data["findings"] for v in f["views"]
                         if v["sop_instance_uid"] == view["sop_instance_uid"]]
                hits = [s for b, s in marks if localises(b, view["box"])]
                best = max(hits, default=None)
                out.append({"exam": exam, "lesion": lesion, "view": view, "path": paths[view["sop_instance_uid"]],
                            "marks": marks, "best": best, "threshold": threshold,
                            "found": best is not None and best >= threshold})
    return out


def _tile(item: dict[str, Any]) -> Image.Image:
    image = read_image(item["path"])
    spacing = image.spacing.mean_mm
    x0, y0, x1, y1 = item["view"]["box"]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = CROP_MM / spacing / 2
    left, top = int(cx - half), int(cy - half)
    side = int(2 * half)
    pixels = np.zeros((side, side), dtype=np.float32)
    height, width = image.shape
    sy0, sx0 = max(top, 0), max(left, 0)
    sy1, sx1 = min(top + side, height), min(left + side, width)
    pixels[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image.pixels[sy0:sy1, sx0:sx1]
    tile = Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8)).resize((TILE, TILE)).convert("RGB")
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default(size=12)
    scale = TILE / side

    def box(b: list[float]) -> tuple[float, float, float, float]:
        return ((b[0] - left) * scale, (b[1] - top) * scale, (b[2] - left) * scale, (b[3] - top) * scale)

    draw.rectangle(box(item["view"]["box"]), outline=(255, 210, 0), width=2)
    for b, score in item["marks"]:
        shown = score >= item["threshold"]
        rect = box(b)
        if rect[2] < 0 or rect[3] < 0 or rect[0] > TILE or rect[1] > TILE:
            continue
        draw.rectangle(rect, outline=(0, 170, 255) if shown else (150, 150, 150), width=2 if shown else 1)
        draw.text((rect[0] + 2, rect[3] + 1), f"{score:.2f}", fill=(0, 170, 255) if shown else (170, 170, 170),
                  font=font)
    lesion, view = item["lesion"], item["view"]
    record = view.get("detectability") or {}
    visible = {True: "visible", False: "not visible"}.get(record.get("visible"), "visibility not recorded")
    best = "no mark" if item["best"] is None else f"best {item['best']:.2f}"
    lines = [f"{'FOUND' if item['found'] else 'MISSED'}  {lesion['lesion_id']} {view['view']}  {best}",
             f"{lesion['diameter_mm']:.0f} mm {lesion.get('shape') or ''}, density {item['exam'].get('density', '?')}",
             f"{visible}" + (f", SNR {record['snr']:.1f}" if "snr" in record else "")]
    draw.rectangle((0, 0, TILE, 46), fill=(0, 0, 0))
    for k, line in enumerate(lines):
        draw.text((4, 2 + 14 * k), line, fill=(255, 90, 90) if k == 0 and not item["found"] else (255, 255, 255),
                  font=font)
    return tile


def gallery(truth_path: Path, findings_dir: Path, out: Path, missed: int = 10, found: int = 10,
            seed: int = 0, min_diameter_mm: float = 8.0) -> dict[str, int]:
    """Write the gallery PNG; returns how many lesion views were found, missed and drawn."""
    truth = json.loads(truth_path.read_text())
    findings = {}
    for path in sorted(findings_dir.rglob("findings.json")):
        data = json.loads(path.read_text())
        findings[data["study_instance_uid"]] = data
    items = _lesion_views(truth, findings, truth_path.parent, min_diameter_mm)
    rng = np.random.default_rng(seed)
    pick = []
    for want, count in ((False, missed), (True, found)):
        pool = [i for i in items if i["found"] is want]
        order = rng.permutation(len(pool))[:count]
        pick += [pool[k] for k in sorted(order)]
    columns = 5
    rows = max(1, -(-len(pick) // columns))
    sheet = Image.new("RGB", (columns * TILE, rows * TILE), (40, 40, 40))
    for k, item in enumerate(pick):
        sheet.paste(_tile(item), ((k % columns) * TILE, (k // columns) * TILE))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return {"found": sum(i["found"] for i in items), "missed": sum(not i["found"] for i in items), "drawn": len(pick)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--findings", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--missed", type=int, default=10)
    parser.add_argument("--found", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = gallery(args.truth, args.findings, args.out, args.missed, args.found, args.seed)
    print(f"{args.out}: {counts['drawn']} tiles; lesion views found {counts['found']}, missed {counts['missed']}")


if __name__ == "__main__":
    main()
