"""A fully connected network on flattened images (van de Ven & Tolias 2019: 2 x 400 ReLU;
Andrychowicz et al. 2016: one hidden layer of 20 sigmoid units)."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

Activation = Literal["relu", "sigmoid"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


def dense_layers(sizes: Sequence[int], activation: Activation = "relu") -> list[nn.Module]:
    """Linear layers through ``sizes`` (input width first), each followed by ``activation``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for width, size in zip(sizes, sizes[1:]):
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
    return layers


class MLP(nn.Module):
    """Flatten, then ``len(hidden)`` Linear+activation layers, then a linear output layer."""

    def __init__(self, in_features: int, n_outputs: int, hidden: Sequence[int] = (400, 400),
                 activation: Activation = "relu") -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), *dense_layers([in_features, *hidden], activation))
        self.head = nn.Linear(hidden[-1] if hidden else in_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
