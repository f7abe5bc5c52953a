"""The 4-block convolutional network of the MAML Omniglot experiments (Finn et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn


class Conv4(nn.Module):
    """Four blocks of 3x3 convolution (stride 2), BatchNorm and ReLU, then a linear head.

    As in the MAML reference code for Omniglot, strided convolutions replace max-pooling and
    the last feature map is averaged over space. BatchNorm keeps no running statistics by
    default (``track_running_stats=False``): every forward pass normalises with the statistics
    of its own batch, the transductive setting that the reference MAML results used.
    """

    def __init__(self, n_outputs: int, in_channels: int = 1, hidden: int = 64,
                 track_running_stats: bool = False) -> None:
        super().__init__()
        blocks = []
        for i in range(4):
            blocks += [
                nn.Conv2d(in_channels if i == 0 else hidden, hidden, 3, stride=2, padding=1),
                nn.BatchNorm2d(hidden, track_running_stats=track_running_stats),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(hidden, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
