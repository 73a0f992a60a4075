"""A small CNN trained from scratch: the fast CPU baseline for tiny images such as digits.

Three ``conv3x3 -> BatchNorm -> ReLU -> max-pool`` blocks (32 -> 64 -> 128 channels) and global
average pooling: ``(B, 3, 32, 32) -> (B, 128)``. There are no pretrained weights; on small, low
resolution domains it is often as good as an ImageNet network and many times faster.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from tlkit.backbones import Backbone, BackboneError

INPUT_SIZE = 32
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3 (no bias: BatchNorm follows) -> BatchNorm -> ReLU -> 2x2 max-pool."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    """``(B, 3, S, S) -> (B, widths[-1])``; works at any ``S`` thanks to global pooling."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        channels = (3, *widths)
        self.blocks = nn.Sequential(*(conv_block(a, b) for a, b in itertools.pairwise(channels)))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x))


def small_cnn(
    *,
    pretrained: bool | str = "auto",
    input_size: int | None = None,
    widths: tuple[int, ...] = (32, 64, 128),
) -> Backbone:
    """Build the small CNN; ``pretrained=True`` is an error since no weights exist."""
    if pretrained is True:
        raise BackboneError(
            "small_cnn has no pretrained weights; pass pretrained=False to train it from "
            "scratch, or pick a pretrained backbone such as 'efficientnet_lite0'."
        )
    if not widths:
        raise BackboneError("small_cnn needs at least one block width, e.g. widths=(32, 64, 128)")
    model = SmallCNN(tuple(int(w) for w in widths))
    return Backbone(
        model,
        model.num_features,
        name="small_cnn",
        input_size=input_size or INPUT_SIZE,
        mean=MEAN,
        std=STD,
        groups=list(model.blocks),
        pretrained=False,
    )
