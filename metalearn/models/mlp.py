"""A fully connected network on flattened images (van de Ven & Tolias 2019: 2 x 400 ReLU)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, then ``len(hidden)`` Linear+ReLU layers, then a linear output layer."""

    def __init__(self, in_features: int, n_outputs: int, hidden: Sequence[int] = (400, 400)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
