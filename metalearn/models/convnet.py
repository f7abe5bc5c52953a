"""A plain convolutional network of configurable depth, without batch normalisation.

The networks of OML (Javed & White 2019: six 3x3 convolutions of 256 channels, strides
2-1-2-1-2-2, on 84x84 Omniglot) and ANML (Beaulieu et al. 2020: three convolutions of 256
channels with instance normalisation, max-pooling after the first two, on 28x28) are both
this network with other options. Both learn online, one image per SGD step, so nothing may
normalise with the statistics of a batch: instance normalisation (per image) or none.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class ConvNet(nn.Module):
    """3x3 convolutions without padding (each followed by an optional instance normalisation,
    ReLU and an optional 2x2 max-pool), flattened, optional hidden linear layers with ReLU,
    then a linear head. Weights are Kaiming-normal (fan-in) and biases zero, as in both papers.

    ``image_size`` is set from the benchmark; ``strides`` and ``pools`` have one entry per
    convolution (default: stride 1, no pool).
    """

    def __init__(self, n_outputs: int, in_channels: int = 1, image_size: int = 28,
                 channels: tuple[int, ...] = (64, 64, 64), strides: tuple[int, ...] | None = None,
                 pools: tuple[bool, ...] | None = None,
                 norm: Literal["none", "instance"] = "none",
                 hidden: tuple[int, ...] = ()) -> None:
        super().__init__()
        strides = tuple(strides or (1,) * len(channels))
        pools = tuple(pools or (False,) * len(channels))
        if not channels or len(strides) != len(channels) or len(pools) != len(channels):
            raise ValueError(f"channels, strides and pools need one entry per convolution, got "
                             f"{len(channels)}, {len(strides)} and {len(pools)}: give strides and "
                             "pools as many entries as channels (or leave them out)")
        if norm not in ("none", "instance"):
            raise ValueError(f"norm must be 'none' or 'instance', got {norm!r}")
        layers: list[nn.Module] = []
        size, previous = image_size, in_channels
        for width, stride, pool in zip(channels, strides, pools):
            layers.append(nn.Conv2d(previous, width, 3, stride=stride))
            if norm == "instance":
                layers.append(nn.InstanceNorm2d(width, affine=True))
            layers.append(nn.ReLU())
            size = (size - 3) // stride + 1
            if pool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            if size < 1:
                raise ValueError(f"{image_size}x{image_size} images shrink to nothing after "
                                 f"{len(layers)} layers of channels={list(channels)}, strides="
                                 f"{list(strides)}, pools={list(pools)}: use fewer convolutions, "
                                 "smaller strides or fewer pools")
            previous = width
        layers.append(nn.Flatten())
        width = previous * size * size
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            width = units
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_outputs)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
