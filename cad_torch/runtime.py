"""The PyTorch reference runtime: the locked network run by torchvision end to end.

torchvision's own RetinaNet postprocessing runs here (not the numpy code of
:mod:`cad.detect.postprocess`), so comparing this runtime with ONNX Runtime checks the export and
the numpy postprocessing together. Needs torch and torchvision (the torch side);
:func:`cad.detect.runtime.make_runtime` reaches it through the ``cad.runtimes`` entry point
(:mod:`cad_torch.plugins`) only when ``--runtime torch`` is asked for.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.image_list import ImageList

from cad.detect.inputs import ViewInput
from cad.detect.locked import LockedModel
from cad.detect.postprocess import DEFAULT_MAX_BATCH, ViewDetections, level_shapes, shape_batches, view_detections
from cad.detect.rescore import BreastInputs
from cad.detect.runtime import RuntimeName
from cad_torch.network import locked_network, locked_rescorer
from cad_torch.rescore_network import run_rescorer


def run_network(network: RetinaNet, inputs: list[ViewInput], max_batch: int = 1) -> list[ViewDetections]:
    """The PyTorch network on prepared views, batching views of equal shape (:func:`shape_batches`)."""
    network.eval()
    results: list[ViewDetections | None] = [None] * len(inputs)
    with torch.inference_mode():
        for batch in shape_batches(inputs, max_batch):
            tensors = [torch.from_numpy(np.ascontiguousarray(inputs[i].array))[None] for i in batch]
            for index, out in zip(batch, network(tensors)):
                results[index] = view_detections(out["boxes"].numpy(), out["scores"].numpy(), inputs[index])
    return [r for r in results if r is not None]


def decode_head_outputs(
    network: RetinaNet, image_shape: tuple[int, int], cls_logits: torch.Tensor, bbox_regression: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    """torchvision's eval-time RetinaNet postprocessing applied to head outputs of a batch of
    equally sized views (``cls_logits`` [N, HWA, classes]); one result per view. The reference
    against which :func:`cad.detect.postprocess.decode_view` is tested.

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
    with torch.inference_mode():
        anchors = network.anchor_generator(images, features)
        # torch's Tensor.split has no type hints
        split = {"cls_logits": list(cls_logits.split(counts, dim=1)),  # type: ignore[no-untyped-call]
                 "bbox_regression": list(bbox_regression.split(counts, dim=1))}  # type: ignore[no-untyped-call]
        split_anchors = [list(a.split(counts)) for a in anchors]
        detections = network.postprocess_detections(split, split_anchors, images.image_sizes)
        results: list[dict[str, torch.Tensor]] = network.transform.postprocess(detections, images.image_sizes,
                                                                              images.image_sizes)
    return results


class TorchRuntime:
    """The reference: the locked PyTorch network (:func:`run_network`) and second stage, built
    from the verified weights (ModelIntegrityError here when they do not fit the manifest)."""

    name = RuntimeName.TORCH.value
    variant: str | None = None

    def __init__(self, model: LockedModel, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.model = model
        self.max_batch = max_batch
        self.network = locked_network(model)
        self.rescorer = locked_rescorer(model)

    def detect(self, inputs: list[ViewInput]) -> list[ViewDetections]:
        return run_network(self.network, inputs, self.max_batch)

    def rescore(self, inputs: BreastInputs) -> tuple[np.ndarray, np.ndarray]:
        if self.rescorer is None:
            raise ValueError(f"{self.model.path}: the model has no second stage")
        return run_rescorer(self.rescorer, inputs)
