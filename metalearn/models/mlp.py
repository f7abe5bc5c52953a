"""A fully connected network on flattened images (van de Ven & Tolias 2019: 2 x 400 ReLU;
Andrychowicz et al. 2016: one hidden layer of 20 sigmoid units, weights and biases drawn from
N(0, 0.01^2) in their code)."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

Activation = Literal["relu", "sigmoid"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


class NormalLinear(nn.Linear):
    """``nn.Linear`` whose weight and bias are drawn from N(0, std^2) whenever it is
    (re)initialised, instead of PyTorch's fan-in uniform."""

    def __init__(self, in_features: int, out_features: int, std: float) -> None:
        self.std = std  # read by reset_parameters, which nn.Linear's constructor calls
        super().__init__(in_features, out_features)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.std)
        nn.init.normal_(self.bias, std=self.std)


def linear(in_features: int, out_features: int, init_std: float | None = None) -> nn.Linear:
    """A linear layer with PyTorch's default initialisation, or N(0, init_std^2)."""
    if init_std is None:
        return nn.Linear(in_features, out_features)
    return NormalLinear(in_features, out_features, init_std)


def dense_layers(sizes: Sequence[int], activation: Activation = "relu",
                 init_std: float | None = None) -> list[nn.Module]:
    """Linear layers through ``sizes`` (input width first), each followed by ``activation``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for width, size in zip(sizes, sizes[1:]):
        layers += [linear(width, size, init_std), ACTIVATIONS[activation]()]
    return layers


class MLP(nn.Module):
    """Flatten, then ``len(hidden)`` Linear+activation layers, then a linear output layer.
    ``init_std`` draws every weight and bias from N(0, init_std^2) (also on ``reinitialise``)."""

    def __init__(self, in_features: int, n_outputs: int, hidden: Sequence[int] = (400, 400),
                 activation: Activation = "relu", init_std: float | None = None) -> None:
        super().__init__()
        if init_std is not None and init_std <= 0:
            raise ValueError(f"init_std must be positive, got {init_std}; leave it out for "
                             "PyTorch's default initialisation")
        self.features = nn.Sequential(nn.Flatten(),
                                      *dense_layers([in_features, *hidden], activation, init_std))
        self.head = linear(hidden[-1] if hidden else in_features, n_outputs, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
