"""Averaged Gradient Episodic Memory, A-GEM (Chaudhry, Ranzato, Rohrbach & Elhoseiny 2019,
"Efficient Lifelong Learning with A-GEM", ICLR).

Each step computes the gradient g of the current minibatch's loss and a reference gradient r
of the loss on ``reference_batch_size`` examples drawn from the memory of the earlier tasks
(256 in the paper). If g would raise that loss (g·r < 0) the step takes g projected onto the
half-space that does not: g - (g·r / r·r) r. The memory is a reservoir over the stream (the
paper keeps a ring buffer per task); the reference draws only from the examples it held when
the current task began, the earlier tasks' memory, as the paper's does.
"""

from __future__ import annotations

import pydantic
import torch

from metalearn.learners.base import LearnerContext, masked_cross_entropy
from metalearn.learners.er import EROptions, ExperienceReplay
from metalearn.learners.registry import register
from metalearn.tasks import Batch


class AGEMOptions(EROptions):
    lr: float = 0.03  # the paper's MNIST setting
    reference_batch_size: int = pydantic.Field(256, ge=1)


def project(gradient: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A-GEM's projection of a flat gradient: unchanged if gradient·reference >= 0, else
    gradient - (gradient·reference / reference·reference) reference, whose dot product with
    the reference is zero."""
    dot = gradient @ reference
    if dot >= 0:
        return gradient
    return gradient - dot / (reference @ reference) * reference


@register
class AGEM(ExperienceReplay):
    """ER's memory and SGD, but the memory constrains the step instead of joining it: the
    current minibatch's gradient, projected so that the loss on the earlier tasks' memory does
    not rise, to first order."""

    name = "agem"
    Options = AGEMOptions

    def __init__(self, model: torch.nn.Module, options: AGEMOptions,
                 context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.weights = list(self.model.parameters())

    def _flat_gradient(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        loss = masked_cross_entropy(self.model(batch.x), batch)
        grads = torch.autograd.grad(loss, self.weights)
        return torch.cat([g.reshape(-1) for g in grads]), loss.detach()

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.model.train()
        gradient, loss = self._flat_gradient(batch)
        reference_batch = self.past.sample(self.options.reference_batch_size, self.draws,
                                           self.context, seen=self.task + 1)
        projected = 0.0
        if reference_batch is not None:
            reference, _ = self._flat_gradient(reference_batch)
            step = project(gradient, reference)
            projected = float(step is not gradient)
            gradient = step
        for parameter, part in zip(self.weights,
                                   gradient.split([p.numel() for p in self.weights])):
            parameter.grad = part.view_as(parameter)
        self.optimizer.step()
        self.remember(batch)
        return {"loss": loss, "projected": torch.tensor(projected)}
