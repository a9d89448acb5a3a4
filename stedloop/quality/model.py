"""The paper's STED quality network: 6 conv + 2 hidden fully-connected layers, sigmoid output.

The paper's text says "max pooling 2x2, stride 1", which cannot be right (the first FC layer
would have billions of weights at 224x224). We use stride 2 with ``ceil_mode`` so that six
pools take 224 -> 112 -> 56 -> 28 -> 14 -> 7 -> 4, with conv widths 32-64-128-192-256-320
and FC 320*4*4 = 5120 -> 512 -> 256 -> 1 (4.25 M parameters, ~1.55 GFLOPs per frame).

The input size is a model hyper-parameter (stored in the checkpoint) only so that tests can
train on tiny images in seconds; the shipped model uses 224.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Bumped whenever the layer layout changes; checkpoints of another version are refused.
ARCHITECTURE_VERSION = 1
ARCHITECTURE_NAME = "stedloop-quality-cnn"
CONV_WIDTHS: tuple[int, ...] = (32, 64, 128, 192, 256, 320)
FC_WIDTHS: tuple[int, ...] = (512, 256)
DEFAULT_INPUT_SIZE_PX = 224


def pooled_size(input_size_px: int, n_pools: int = len(CONV_WIDTHS)) -> int:
    """Side length after ``n_pools`` 2x2 stride-2 ceil-mode pools."""
    size = input_size_px
    for _ in range(n_pools):
        size = math.ceil(size / 2)
    return size


class QualityNet(nn.Module):
    """Maps a (N, 1, S, S) z-scored image batch to (N,) quality scores in [0, 1]."""

    def __init__(self, input_size_px: int = DEFAULT_INPUT_SIZE_PX) -> None:
        super().__init__()
        if input_size_px < 8:
            raise ValueError(f"input_size_px must be at least 8, got {input_size_px}")
        self.input_size_px = int(input_size_px)
        layers: list[nn.Module] = []
        in_ch = 1
        for index, width in enumerate(CONV_WIDTHS):
            # The paper: batch norm on all layers but the first. The conv bias is redundant
            # under batch norm, so it is only kept on the first layer.
            use_bn = index > 0
            layers.append(nn.Conv2d(in_ch, width, kernel_size=3, padding=1, bias=not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ELU(inplace=True))
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            in_ch = width
        self.features = nn.Sequential(*layers)
        side = pooled_size(self.input_size_px)
        flat = CONV_WIDTHS[-1] * side * side
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, FC_WIDTHS[0], bias=False),
            nn.BatchNorm1d(FC_WIDTHS[0]),
            nn.ELU(inplace=True),
            nn.Linear(FC_WIDTHS[0], FC_WIDTHS[1], bias=False),
            nn.BatchNorm1d(FC_WIDTHS[1]),
            nn.ELU(inplace=True),
            nn.Linear(FC_WIDTHS[1], 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Output (N,), never (N, 1): MSE against (N,) labels would otherwise broadcast into
        # an N x N loss without any error.
        return torch.sigmoid(self.head(self.features(x))).reshape(-1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
