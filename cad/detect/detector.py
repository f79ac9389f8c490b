"""Run the locked network on prepared views; boxes come back in original image pixels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.image_list import ImageList

from cad.detect.inputs import ViewInput


@dataclass(frozen=True)
class ViewDetections:
    """Detections on one view, highest score first."""

    boxes: np.ndarray  # (N, 4) original image pixels [x0, y0, x1, y1]
    model_boxes: np.ndarray  # (N, 4) model-input pixels
    scores: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.scores)


#: views of equal padded shape run together up to this many (an exam's four views at most
#: share two shapes; larger batches only pay off on a GPU)
DEFAULT_MAX_BATCH = 4


def shape_batches(inputs: list[ViewInput], max_batch: int) -> list[list[int]]:
    """Indices of ``inputs`` grouped into batches of equal padded shape, at most ``max_batch``
    each, in order of first appearance.

    Only views of identical shape share a batch, so no view is padded beyond its own stride
    padding and its detections never depend on the size of its batch-mates.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, not {max_batch}")
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, view in enumerate(inputs):
        groups.setdefault(tuple(view.array.shape), []).append(index)
    return [group[k:k + max_batch] for group in groups.values() for k in range(0, len(group), max_batch)]


def run_network(network: RetinaNet, inputs: list[ViewInput], max_batch: int = 1) -> list[ViewDetections]:
    """The PyTorch network on prepared views, batching views of equal shape (:func:`shape_batches`)."""
    network.eval()
    results: list[ViewDetections | None] = [None] * len(inputs)
    with torch.inference_mode():
        for batch in shape_batches(inputs, max_batch):
            tensors = [torch.from_numpy(np.ascontiguousarray(inputs[i].array))[None] for i in batch]
            for index, out in zip(batch, network(tensors)):
                results[index] = view_detections(out, inputs[index])
    return [r for r in results if r is not None]


def view_detections(out: dict[str, torch.Tensor], view: ViewInput) -> ViewDetections:
    """Detections of one view from RetinaNet's output: clipped to the unpadded input, sorted by
    descending score (ties by position), mapped back to original pixels."""
    scores = out["scores"].double().numpy()
    model_boxes = out["boxes"].double().numpy().reshape(-1, 4)
    width, height = view.size
    model_boxes[:, 0::2] = np.clip(model_boxes[:, 0::2], 0, width)
    model_boxes[:, 1::2] = np.clip(model_boxes[:, 1::2], 0, height)
    order = np.lexsort((model_boxes[:, 1], model_boxes[:, 0], -scores))
    model_boxes, scores = model_boxes[order], scores[order]
    return ViewDetections(view.to_original(model_boxes), model_boxes, scores)


def level_shapes(height: int, width: int, levels: int = 5) -> list[tuple[int, int]]:
    """Feature-map sizes of the FPN levels P3..P7 for a (height, width) input.

    P3-P5 come from the ResNet strides 8, 16, 32; P6 and P7 from LastLevelP6P7's 3x3 stride-2
    convolutions (padding 1), which round up.
    """
    shapes = [(height // 8, width // 8), (height // 16, width // 16), (height // 32, width // 32)]
    while len(shapes) < levels:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def decode_head_outputs(
    network: RetinaNet, image_shape: tuple[int, int], cls_logits: torch.Tensor, bbox_regression: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    """RetinaNet's eval-time postprocessing applied to externally computed head outputs of a
    batch of equally sized views (``cls_logits`` [N, HWA, classes]); one result per view.

    The same steps as ``RetinaNet.forward`` after the heads, with torchvision's own code:
    ``anchor_generator``, ``postprocess_detections`` (box decoding by ``box_coder``, score
    threshold, top-k, NMS) and ``transform.postprocess``. Only the feature-map shapes are
    needed for the anchors, so zero-channel placeholders stand in for the features.
    """
    height, width = image_shape
    shapes = level_shapes(height, width, len(network.anchor_generator.sizes))
    count = int(cls_logits.shape[0])
    images = ImageList(torch.empty(count, 0, height, width), [(height, width)] * count)
    features = [torch.empty(count, 0, h, w) for h, w in shapes]
    per_level = [h * w for h, w in shapes]
    anchors_per_location, rest = divmod(int(cls_logits.shape[1]), sum(per_level))
    if rest or anchors_per_location != network.anchor_generator.num_anchors_per_location()[0]:
        raise ValueError(f"head outputs ({cls_logits.shape[1]} anchors) do not match a {height}x{width} input")
    counts = [n * anchors_per_location for n in per_level]
    anchors = network.anchor_generator(images, features)
    # torch's Tensor.split has no type hints
    split = {"cls_logits": list(cls_logits.split(counts, dim=1)),  # type: ignore[no-untyped-call]
             "bbox_regression": list(bbox_regression.split(counts, dim=1))}  # type: ignore[no-untyped-call]
    split_anchors = [list(a.split(counts)) for a in anchors]
    detections = network.postprocess_detections(split, split_anchors, images.image_sizes)
    results: list[dict[str, torch.Tensor]] = network.transform.postprocess(detections, images.image_sizes,
                                                                          images.image_sizes)
    return results


#: the exported network part's input and outputs (ONNX graph, TensorRT engine bindings)
INPUT_NAME = "image"
OUTPUT_NAMES = ("cls_logits", "bbox_regression")

#: computes the head outputs (``cls_logits``, ``bbox_regression``) of a float32 batch [N, 1, H, W]
HeadRunner = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]


def detect_with_heads(
    network: RetinaNet, inputs: list[ViewInput], max_batch: int, run_heads: HeadRunner
) -> list[ViewDetections]:
    """Detections of views whose heads another runtime computes (ONNX Runtime, TensorRT), in
    batches of equal shape, decoded by the locked network's own postprocessing."""
    results: list[ViewDetections | None] = [None] * len(inputs)
    with torch.inference_mode():
        for batch in shape_batches(inputs, max_batch):
            array = np.ascontiguousarray(np.stack([inputs[i].array for i in batch])[:, None], dtype=np.float32)
            cls_logits, bbox_regression = run_heads(array)
            outs = decode_head_outputs(network, array.shape[-2:], cls_logits, bbox_regression)
            for index, out in zip(batch, outs):
                results[index] = view_detections(out, inputs[index])
    return [r for r in results if r is not None]
