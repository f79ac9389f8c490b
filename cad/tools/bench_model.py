"""Model-stage speed per view: PyTorch vs ONNX Runtime on the same prepared views, one run.

``python -m cad.tools.bench_model [DICOM folder] [--repeats N]`` (default: a 2-exam phantom
generated in a temporary folder). Only the network stage is timed (``Runtime.detect``: network
plus the shared postprocessing); ingest and view preparation are done once, beforehand.
Runtimes are interleaved per repeat so that machine load affects both alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cad.detect.inputs import ViewInput, prepare_view
from cad.detect.locked import LockedModel, load_locked_model
from cad.detect.runtime import RuntimeName, make_runtime
from cad.io import load


def prepared_views(model: LockedModel, folder: Path) -> list[ViewInput]:
    """Every analysable view under ``folder``, prepared for the network."""
    return [prepare_view(image, model.config) for image in load([folder]).images]


def bench_model(
    model: LockedModel, views: list[ViewInput], runtimes: tuple[str, ...] = ("torch", "onnxruntime"),
    repeats: int = 3,
) -> dict[str, Any]:
    """Median over ``repeats`` of the mean model-stage seconds per view, per runtime, after one
    warm-up pass each; plus each runtime's ratio to the first."""
    engines = {name: make_runtime(model, RuntimeName(name)) for name in runtimes}
    for engine in engines.values():
        engine.detect(views[:1])
    samples: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            for view in views:
                engine.detect([view])
            samples[name].append((time.perf_counter() - start) / len(views))
    per_view = {name: sorted(s)[len(s) // 2] for name, s in samples.items()}
    first = runtimes[0]
    return {
        "seconds_per_view": {k: round(v, 4) for k, v in per_view.items()},
        f"speed_vs_{first}": {k: round(per_view[first] / v, 2) for k, v in per_view.items()},
        "views": len(views),
        "pixels_per_view_mean": round(sum(v.array.size for v in views) / len(views)),
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu": _cpu_name(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", help="DICOM folder (default: a generated phantom)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args(argv)
    model = load_locked_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from cad.tools.phantom.generate import generate

            folder = Path(tmp)
            generate(folder, exams=2, seed=20261123)
        views = prepared_views(model, folder)
    print(json.dumps(bench_model(model, views, repeats=args.repeats), indent=2))


if __name__ == "__main__":
    main()
