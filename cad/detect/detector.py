"""Run the locked network on prepared views; boxes come back in original image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.models.detection import RetinaNet

from cad.detect.inputs import ViewInput


@dataclass(frozen=True)
class ViewDetections:
    """Detections on one view, highest score first."""

    boxes: np.ndarray  # (N, 4) original image pixels [x0, y0, x1, y1]
    model_boxes: np.ndarray  # (N, 4) model-input pixels
    scores: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.scores)


def run_network(network: RetinaNet, inputs: list[ViewInput]) -> list[ViewDetections]:
    """Inference one view at a time (no padding differences between batch compositions)."""
    network.eval()
    results = []
    with torch.inference_mode():
        for view in inputs:
            out = network([torch.from_numpy(np.ascontiguousarray(view.array))[None]])[0]
            scores = out["scores"].double().numpy()
            model_boxes = out["boxes"].double().numpy().reshape(-1, 4)
            width, height = view.size
            model_boxes[:, 0::2] = np.clip(model_boxes[:, 0::2], 0, width)
            model_boxes[:, 1::2] = np.clip(model_boxes[:, 1::2], 0, height)
            order = np.lexsort((model_boxes[:, 1], model_boxes[:, 0], -scores))
            model_boxes, scores = model_boxes[order], scores[order]
            results.append(ViewDetections(view.to_original(model_boxes), model_boxes, scores))
    return results
