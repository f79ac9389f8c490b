"""How the orientation check (SRS-GEO-005, RC-032) meets a phantom set: `python -m
cad_tools.orientation_check PHANTOM_DIR`. For every image: is the chest-wall side clear in the
pixels, does it agree with PatientOrientation, and would the image be refused; with the edge
cover of the least clear images, to show the margin to the threshold."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cad.io import load
from cad.preprocess.geometry import _orientation_from_header
from cad.preprocess.mask import segment_breast


def run(folder: Path) -> dict[str, Any]:
    images = [image for study in load([folder]).studies for image in study.images]
    rows = []
    for image in images:
        mask = segment_breast(image.pixels, image.spacing.mean_mm)
        header_left, _ = _orientation_from_header(image)
        rows.append({"file": str(image.path.relative_to(folder)), "clear": mask.chest_wall_clear,
                     "agrees": header_left is None or header_left == mask.chest_wall_left,
                     "edge_cover": [round(c, 3) for c in mask.edge_cover]})
    ratio = [min(r["edge_cover"]) / max(max(r["edge_cover"]), 1e-9) for r in rows]
    return {
        "images": len(rows), "clear": sum(r["clear"] for r in rows), "agree": sum(r["agrees"] for r in rows),
        "refused": sum(r["clear"] and not r["agrees"] for r in rows),
        "lowest_dominant_cover": min(max(r["edge_cover"]) for r in rows) if rows else None,
        "highest_other_to_dominant_ratio": round(max(ratio), 3) if rows else None,
        "least_clear": sorted(rows, key=lambda r: -min(r["edge_cover"]) / max(max(r["edge_cover"]), 1e-9))[:5],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    result = run(args.folder)
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["refused"] == 0 else 1)


if __name__ == "__main__":
    main()
