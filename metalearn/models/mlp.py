"""A fully connected network on flattened images (van de Ven & Tolias 2019: 2 x 400 ReLU)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def relu_layers(sizes: Sequence[int]) -> list[nn.Module]:
    """Linear+ReLU layers through ``sizes`` (input width first)."""
    layers: list[nn.Module] = []
    for width, size in zip(sizes, sizes[1:]):
        layers += [nn.Linear(width, size), nn.ReLU()]
    return layers


class MLP(nn.Module):
    """Flatten, then ``len(hidden)`` Linear+ReLU layers, then a linear output layer."""

    def __init__(self, in_features: int, n_outputs: int, hidden: Sequence[int] = (400, 400)) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), *relu_layers([in_features, *hidden]))
        self.head = nn.Linear(hidden[-1] if hidden else in_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
