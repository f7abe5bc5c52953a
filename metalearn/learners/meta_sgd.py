"""Meta-SGD: MAML that also learns a learning rate for every parameter entry.

Li, Zhou, Chen & Li (2017), "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning". The
inner step is ``theta - alpha * grad`` with ``alpha`` a tensor of the shape of ``theta``,
meta-learned with the initialisation by the same outer Adam step: it learns both the size and
the direction of the update, and answers "can a learning rate be learned by learning?".
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metalearn.learners.base import LearnerContext
from metalearn.learners.maml import MAML, MAMLOptions
from metalearn.learners.registry import register


class MetaSGDOptions(MAMLOptions):
    """``inner_lr`` is where every learned rate starts; the paper adapts in one step."""

    eval_inner_steps: int = 1


@register
class MetaSGD(MAML):
    """MAML with per-parameter inner learning rates learned by the outer loop."""

    name = "meta_sgd"
    Options = MetaSGDOptions

    def __init__(self, model: nn.Module, options: MetaSGDOptions, context: LearnerContext) -> None:
        self.learned_lrs = {
            name: torch.full_like(p, options.inner_lr, device=context.device, requires_grad=True)
            for name, p in model.named_parameters()
        }
        super().__init__(model, options, context)

    def meta_parameters(self) -> list[torch.Tensor]:
        return [*super().meta_parameters(), *self.learned_lrs.values()]

    def inner_lrs(self) -> dict[str, float | torch.Tensor]:
        return self.learned_lrs

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "inner_lrs": {k: v.detach() for k, v in self.learned_lrs.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name, lr in self.learned_lrs.items():
            lr.copy_(state["inner_lrs"][name])
