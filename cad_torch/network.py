"""torchvision RetinaNet (ResNet + FPN, focal loss) for one-channel mammograms, and the PyTorch
side of the locked model: building its modules from the verified weights, writing a locked model.

Needs torch and torchvision (the torch side, mammo-cad-torch); the site install never imports this module
(import contract ``site-without-torch`` in pyproject.toml).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import cad
from cad.detect.config import DetectorConfig
from cad.detect.locked import RESCORER_PREFIX, LockedModel, ModelIntegrityError, sha256_file
from cad.detect.manifest import MANIFEST_FILE, MANIFEST_VERSION, RESCORER_KEY, WEIGHTS_FILE
from cad.detect.postprocess import TOPK_CANDIDATES
from cad.detect.rescore import RescoreSettings
from cad_torch.rescore_network import DualViewRescorer

_RESNETS = {"resnet18": (resnet18, 512), "resnet34": (resnet34, 512), "resnet50": (resnet50, 2048)}


class PreparedInputTransform(GeneralizedRCNNTransform):  # type: ignore[misc]  # torchvision has no type hints
    """Batching and padding only: inputs arrive already resampled and normalised by
    :mod:`cad.detect.inputs`, so resizing here would break the exact box mapping."""

    def resize(self, image: torch.Tensor, target=None):  # type: ignore[no-untyped-def]
        return image, target


def build_detector(config: DetectorConfig) -> RetinaNet:
    """A randomly initialised RetinaNet for ``config`` (one class: mass)."""
    factory, c5_channels = _RESNETS[config.backbone]
    body = factory(weights=None)
    body.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    in_channels = [c5_channels // 4, c5_channels // 2, c5_channels]
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=in_channels,
        out_channels=config.fpn_channels,
        extra_blocks=LastLevelP6P7(config.fpn_channels, config.fpn_channels),
    )
    sizes = tuple(tuple(int(round(s * k)) for k in config.anchor_scales) for s in config.anchor_sizes)
    anchors = AnchorGenerator(sizes, (tuple(config.aspect_ratios),) * len(sizes))
    model = RetinaNet(
        backbone,
        num_classes=1,
        anchor_generator=anchors,
        score_thresh=config.score_floor,
        nms_thresh=config.nms_iou,
        detections_per_img=config.max_detections_per_view,
        topk_candidates=TOPK_CANDIDATES,
    )
    model.transform = PreparedInputTransform(
        min_size=1, max_size=1, image_mean=[0.0], image_std=[1.0], size_divisible=32
    )
    return model


#: PyTorch modules already built per loaded model (a model's weights never change once verified)
_BUILT: WeakKeyDictionary[LockedModel, tuple[RetinaNet, DualViewRescorer | None]] = WeakKeyDictionary()


def locked_network(model: LockedModel) -> RetinaNet:
    """The first stage of ``model`` as a PyTorch RetinaNet (eval mode) from its verified weights;
    built once per loaded model. ModelIntegrityError when the weights do not fit the manifest."""
    return _built(model)[0]


def locked_rescorer(model: LockedModel) -> DualViewRescorer | None:
    """The second stage of ``model`` (eval mode) from its verified weights; None for a one-stage model."""
    return _built(model)[1]


def _built(model: LockedModel) -> tuple[RetinaNet, DualViewRescorer | None]:
    """Both stages from one reading of the verified weights (the second stage's tensors carry
    :data:`RESCORER_PREFIX`)."""
    if model not in _BUILT:
        try:
            state = {k: v.float() if v.is_floating_point() else v for k, v in load_safetensors(model.weights).items()}
        except SafetensorError as exc:
            raise ModelIntegrityError(f"{model.path}: model does not load ({exc})") from None
        first = {k: v for k, v in state.items() if not k.startswith(RESCORER_PREFIX)}
        second = {k[len(RESCORER_PREFIX):]: v for k, v in state.items() if k.startswith(RESCORER_PREFIX)}
        settings = model.rescore_settings
        network = _loaded(model, build_detector(model.config), first)
        rescorer = _loaded(model, DualViewRescorer(settings.network), second) if settings is not None else None
        _BUILT[model] = (network, rescorer)
    return _BUILT[model]


def _loaded(model: LockedModel, module: nn.Module, state: dict[str, torch.Tensor]) -> Any:
    """``module`` with ``state`` loaded strictly, in eval mode; a mismatch is ModelIntegrityError."""
    try:
        module.load_state_dict(state, strict=True)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise ModelIntegrityError(
            f"{model.path}: model does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None
    return module.eval()


def write_locked_model(
    out_dir: Path,
    network: torch.nn.Module,
    config: DetectorConfig,
    name: str,
    operating_point: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, Any],
    rescorer: tuple[DualViewRescorer, RescoreSettings] | None = None,
) -> Path:
    """Write weights (float16 safetensors; a second stage's under ``rescorer.``, in the same
    file and so under the same hash) and a manifest naming their SHA-256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = dict(network.state_dict())
    if rescorer is not None:
        tensors.update({RESCORER_PREFIX + k: v for k, v in rescorer[0].state_dict().items()})
    state = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in tensors.items()
    }
    weights = out_dir / WEIGHTS_FILE
    save_file(state, str(weights), metadata={"name": name, "dtype": "float16"})
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "algorithm": {"name": cad.ALGORITHM_NAME, "version": cad.__version__},
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(weights),
                    "bytes": weights.stat().st_size, "dtype": "float16"},
        "detector": config.to_dict(),
        "operating_point": operating_point,
        "training": training,
        "metrics": metrics,
    }
    if rescorer is not None:
        manifest[RESCORER_KEY] = rescorer[1].to_dict()
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out_dir
