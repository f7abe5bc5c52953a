"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017, "Continual learning through synaptic
intelligence", ICML).

While training on a task each parameter's contribution to the drop in loss is integrated along
the optimisation path, w_k = -sum_steps g_k * delta theta_k (g the gradient the optimizer steps
with, penalty included, as in van de Ven & Tolias's code). After the task,

    Omega_k <- Omega_k + w_k / (Delta_k^2 + xi),

Delta_k the parameter's total change over the task and xi a damping term for parameters that
barely moved; later tasks train on ``loss + strength * sum_k Omega_k (theta_k - theta*_k)^2``
(strength is the paper's c) with theta* the parameters after the latest task.
"""

from __future__ import annotations

import pydantic
import torch

from metalearn.learners.base import CLASSIFICATION
from metalearn.learners.plasticity import PlasticityOptions, SelectivePlasticity
from metalearn.learners.registry import register


class SIOptions(PlasticityOptions):
    strength: float = 1.0  # c
    damping: float = pydantic.Field(0.1, gt=0.0)  # xi (0.1 as in van de Ven & Tolias)


@register
class SI(SelectivePlasticity):
    """Fine-tuning with importance integrated along the training trajectory.

    The path integral restarts with each task and checkpoints fall between tasks, so it is not
    part of the saved state; the penalty is.
    """

    name = "si"
    task_kinds = frozenset({CLASSIFICATION})
    Options = SIOptions

    def begin_task(self, task_index: int) -> None:
        self.path_integral = [torch.zeros_like(p) for p in self.parameters]
        self.previous = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def optimizer_step(self) -> None:
        super().optimizer_step()
        current = [p.detach() for p in self.parameters]
        step = torch._foreach_sub(current, self.previous)
        torch._foreach_addcmul_(self.path_integral, [p.grad for p in self.parameters], step, value=-1.0)
        torch._foreach_copy_(self.previous, current)

    @torch.no_grad()
    def importance(self, task_index: int) -> list[torch.Tensor]:
        change = torch._foreach_sub([p.detach() for p in self.parameters], self.penalty.anchor)
        return [w / (d.square() + self.options.damping) for w, d in zip(self.path_integral, change)]
