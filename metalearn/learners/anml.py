"""ANML: meta-learn a neuromodulatory gate that decides where online SGD may change a network.

Beaulieu et al. (2020), "Learning to Continually Learn" (ECAI). A neuromodulatory network (a
copy of the model's convolutional trunk with its own weights, then a linear layer and a
sigmoid) gates the prediction network's features element-wise before its head, which also
gates their gradients: the plasticity of the prediction network. The inner loop trains the
whole prediction network online, one image per SGD step, on 20 images of one class; the
meta-loss on those images and 64 remembered ones trains the gate and the prediction network's
initial weights. Meta-test trains a fresh head online on the gated features, as OML's
(``metalearn.learners.oml``, whose loop this is, with a gate).

Differences from the paper's network: the gate's trunk has the prediction trunk's widths
(ANML's has 112 channels against 256), and images are one-channel (ANML's code triplicates
them to three).
"""

from __future__ import annotations

import copy

import pydantic
from torch import nn

from metalearn.learners.oml import OML, OMLOptions
from metalearn.learners.registry import register
from metalearn.seeding import derive_generator


class ANMLOptions(OMLOptions):
    """Defaults: ANML's Omniglot meta-training as its code runs it (one class of 20 images per
    trajectory, the whole prediction network adapted at 0.1, the meta-loss on those 20 images
    and 64 remembered, outer Adam 1e-3)."""

    inner_lr: float = 0.1
    inner_layers: int | None = pydantic.Field(None, ge=1)  # the whole prediction network
    lr: float = 1e-3
    trajectory_classes: int = pydantic.Field(1, ge=1)
    trajectory_shots: int = pydantic.Field(20, ge=1)
    query_shots: int = pydantic.Field(0, ge=0)
    remember_size: int = pydantic.Field(64, ge=0)


@register
class ANML(OML):
    """A neuromodulated meta-learning algorithm: OML's loop with a meta-learned feature gate."""

    name = "anml"
    Options = ANMLOptions

    def modulator(self) -> nn.Module:
        """The model's trunk (fresh Kaiming-normal weights, zero biases, unit norm scales), a
        linear layer to one value per feature, and a sigmoid: gates in (0, 1)."""
        width = self.model.head.in_features
        modulator = nn.Sequential(copy.deepcopy(self.model.features), nn.Linear(width, width))
        generator = derive_generator(self.context.seed, "anml.modulator")
        for module in modulator.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
                nn.init.zeros_(module.bias)
            elif hasattr(module, "reset_parameters") and not list(module.children()):
                module.reset_parameters()  # norms: deterministic (ones and zeros)
        return modulator.append(nn.Sigmoid())
