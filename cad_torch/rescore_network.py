"""The second-stage network: single-view and dual-view scores for the candidates of one breast.

Composed like torchvision's detectors, from small parts with narrow interfaces: a patch
encoder shared by every candidate of the breast, a single-view head over the candidate's own
encoding and features, and a dual-view head that adds its counterparts in the other view
(each encoded pair is weighed by a learned attention and pooled). The whole breast is one call,
so each patch is encoded once, and the graph exports to ONNX as it is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cad.detect.rescore import OWN_FEATURES, PAIR_FEATURES, BreastInputs, RescorerConfig


class PatchEncoder(nn.Module):
    """Two-channel 48 x 48 patches -> an embedding (conv-BN-ReLU blocks, 2x pooling, global mean)."""

    def __init__(self, channels: tuple[int, ...], embedding: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 2
        for k, width in enumerate(channels):
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if k < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            previous = width
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(previous, embedding)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.project(self.features(patches).mean(dim=(2, 3))))


def _mlp(inputs: int, hidden: int, outputs: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, outputs))


class DualViewRescorer(nn.Module):
    """Logits (single-view, dual-view) for every candidate of one or more breasts.

    Inputs: ``patches`` [M, 2, 48, 48], ``own`` [M, len(OWN_FEATURES)], ``index`` [M, K] (int64,
    counterpart rows in the same batch), ``pair`` [M, K, len(PAIR_FEATURES)], ``mask`` [M, K]
    (1 where the counterpart exists). A candidate without counterparts gets a dual-view score
    from its own evidence and a learned "no counterpart" summary.
    """

    def __init__(self, config: RescorerConfig | None = None) -> None:
        super().__init__()
        config = config or RescorerConfig()
        self.config = config
        h = config.hidden
        # no channels: a features-only second stage (first-stage evidence, geometry, counterparts)
        e = config.embedding if config.channels else 0
        self.encoder = PatchEncoder(config.channels, e) if config.channels else None
        self.own = _mlp(e + len(OWN_FEATURES), h, h, config.dropout)
        self.single = nn.Linear(h, 1)
        self.pair = _mlp(2 * e + len(PAIR_FEATURES), h, h, config.dropout)
        self.attention = nn.Linear(h, 1)
        self.absent = nn.Parameter(torch.zeros(h))
        self.dual = _mlp(2 * h, h, 1, config.dropout)

    def forward(
        self, patches: torch.Tensor, own: torch.Tensor, index: torch.Tensor, pair: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is not None:
            embedded = self.encoder(patches)  # [M, E]
        else:
            embedded = own[:, :0]  # [M, 0]: keeps the graph's inputs the same
        h = torch.relu(self.own(torch.cat([embedded, own], dim=1)))  # [M, H]
        single = self.single(h).squeeze(1)
        other = embedded[index]  # [M, K, E]
        mine = embedded.unsqueeze(1).expand_as(other)
        g = torch.relu(self.pair(torch.cat([mine, other, pair], dim=2)))  # [M, K, H]
        logits = self.attention(g).squeeze(2) + (mask - 1.0) * 1e4  # masked counterparts vanish
        any_counterpart = mask.max(dim=1, keepdim=True).values  # [M, 1]
        weights = torch.softmax(logits, dim=1) * any_counterpart
        pooled = (weights.unsqueeze(2) * g).sum(dim=1) + (1.0 - any_counterpart) * self.absent
        dual = self.dual(torch.cat([h, pooled], dim=1)).squeeze(1)
        return single, dual


def run_rescorer(network: DualViewRescorer, inputs: BreastInputs) -> tuple[np.ndarray, np.ndarray]:
    """(single-view, dual-view) logits, float64, of one breast's candidates in PyTorch."""
    if len(inputs) == 0:
        return np.zeros(0), np.zeros(0)
    tensors = (torch.from_numpy(inputs.patches), torch.from_numpy(inputs.own), torch.from_numpy(inputs.pairs.index),
               torch.from_numpy(inputs.pairs.features), torch.from_numpy(inputs.pairs.mask))
    network.eval()
    with torch.inference_mode():
        single, dual = network(*tensors)
    return single.double().numpy(), dual.double().numpy()
