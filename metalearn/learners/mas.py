"""Memory Aware Synapses (Aljundi et al. 2018, "Memory Aware Synapses: Learning what (not) to
forget", ECCV).

A parameter's importance is how sensitive the learned function is to it, measured without
labels: Omega_k = mean_x |d ||f(x)||_2^2 / d theta_k| over the task's training inputs, f the
network's outputs (those of the scenario: the task's head in task-IL). Importance accumulates over
tasks and later tasks train on ``loss + strength * sum_k Omega_k (theta_k - theta*_k)^2``
(strength is the paper's lambda) with theta* the parameters after the latest task.
"""

from __future__ import annotations

import torch

from metalearn.learners.base import CLASSIFICATION
from metalearn.learners.plasticity import (
    PlasticityOptions,
    SelectivePlasticity,
    mean_gradient_power,
)
from metalearn.learners.registry import register
from metalearn.tasks import Batch


def squared_output_norm(outputs: torch.Tensor, allowed: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    """||f(x)||_2^2 of each example over its allowed outputs."""
    return outputs.masked_fill(~allowed, 0.0).square().sum(-1)


def no_target(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    return batch.y  # unused: the squared norm needs no label


@register
class MAS(SelectivePlasticity):
    """Fine-tuning with importance from the outputs' sensitivity to each parameter."""

    name = "mas"
    task_kinds = frozenset({CLASSIFICATION})
    Options = PlasticityOptions

    def importance(self, task_index: int) -> list[torch.Tensor]:
        return mean_gradient_power(self.model, self.task_batches(task_index), squared_output_norm,
                                   no_target, 1, self.parameters)
