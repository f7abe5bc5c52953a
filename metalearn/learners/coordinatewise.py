"""Shared pieces of the learned optimizers, which act on every parameter entry ("coordinate")
of a network with one small recurrent network and a state per coordinate.

All parameter tensors are flattened into one vector, so the whole network's update is a single
batched LSTM call over its coordinates, never a Python loop over tensors.
"""

from __future__ import annotations

import math

import torch

Parameters = dict[str, torch.Tensor]


def log_and_sign(x: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Andrychowicz et al. (2016), Appendix A: each value as two inputs of similar scale,

    ``(log|x| / p, sign(x))`` if ``|x| >= e^-p``, else ``(-1, e^p x)``;

    large and tiny gradients then both reach the LSTM in a range it can use. ``[..., 2]``.
    """
    magnitude = x.abs()
    large = magnitude >= math.exp(-p)
    # log of a zero gradient is never used, but would poison a backward pass through ``where``
    log_part = torch.where(large, magnitude.clamp_min(math.exp(-p)).log() / p, -1.0)
    sign_part = torch.where(large, torch.sign(x), math.exp(p) * x)
    return torch.stack([log_part, sign_part], dim=-1)


def flatten(tensors: Parameters) -> torch.Tensor:
    """Every entry of every tensor, in the dict's order, as one vector."""
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def unflatten(vector: torch.Tensor, like: Parameters) -> Parameters:
    """``vector`` cut back into tensors of the shapes of ``like`` (inverse of ``flatten``)."""
    pieces = vector.split([t.numel() for t in like.values()])
    return {name: piece.view_as(t) for (name, t), piece in zip(like.items(), pieces)}
