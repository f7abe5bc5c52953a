"""Network architectures, built by name from a config.

Every model exposes ``features`` (the body) and ``head`` (the final linear layer), so learners
that replace or fine-tune the head work with any of them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from metalearn.models.conv4 import Conv4
from metalearn.models.convnet import ConvNet
from metalearn.models.mlp import MLP
from metalearn.models.searchable import (CONV4_BLOCKS, OPERATIONS, REDUCTIONS, DartsSupernet,
                                         SearchableConvNet, architecture_flops, count_flops)

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "conv4": Conv4, "convnet": ConvNet,
                                      "searchable": SearchableConvNet, "darts": DartsSupernet}


def build_model(name: str, input_shape: tuple[int, ...], n_outputs: int, **options: Any) -> nn.Module:
    """A fresh model for inputs of ``input_shape`` (C, H, W) and ``n_outputs`` classes."""
    if name == "mlp":
        return MLP(math.prod(input_shape), n_outputs, **options)
    if name == "conv4":
        return Conv4(n_outputs, in_channels=input_shape[0], **options)
    if name in ("convnet", "searchable", "darts"):
        if "image_size" in options:
            raise ValueError("model.options.image_size is the benchmark's image size, set by the "
                             "runner: leave it out (Omniglot's is benchmark.options.image_size)")
        return MODELS[name](n_outputs, in_channels=input_shape[0], image_size=input_shape[-1],
                            **options)
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")


def reinitialise(model: nn.Module, seed: int) -> None:
    """Draw ``model``'s weights afresh, as its layers initialise them, from ``seed`` alone
    (the global random state is left as it was)."""
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


__all__ = ["CONV4_BLOCKS", "Conv4", "ConvNet", "DartsSupernet", "MLP", "MODELS", "OPERATIONS",
           "REDUCTIONS", "SearchableConvNet", "architecture_flops", "build_model", "count_flops",
           "reinitialise"]
