"""Elastic weight consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in
neural networks", PNAS).

After each task the diagonal of the Fisher information, F_k = E_x E_y [(d log p(y|x) / d theta_k)^2]
over the task's training inputs, measures how much each parameter mattered; training on later
tasks adds one penalty per earlier task t,

    loss + strength / 2 * sum_t sum_k F_t,k (theta_k - theta*_t,k)^2,

with the 1/2 of the paper's Laplace approximation (as in van de Ven & Tolias's code, so their
lambda means the same here). The expectation over y is taken as:

- ``sampled``: y drawn from the model's own predictive distribution (the true Fisher, the
  paper's definition, one sample per input);
- ``empirical``: y the true label (the "empirical Fisher");
- ``predicted``: y the model's most likely class (van de Ven & Tolias's code).

Per-example gradients come from :func:`metalearn.learners.plasticity.summed_gradient_powers`
(factored for linear layers, ``vmap`` over ``grad`` otherwise); logits are restricted to the
outputs of the scenario (the task's head in task-IL, the classes seen so far in class-IL).
"""

from __future__ import annotations

from typing import Literal

import pydantic
import torch
import torch.nn.functional as F

from metalearn.learners.base import CLASSIFICATION
from metalearn.learners.plasticity import (
    PlasticityOptions,
    SelectivePlasticity,
    mean_gradient_power,
)
from metalearn.learners.registry import register
from metalearn.seeding import reserved
from metalearn.tasks import Batch

FISHER_LABELS = reserved("ewc.fisher_labels")  # the sampled Fisher's labels


class EWCOptions(PlasticityOptions):
    strength: float = 1e6  # lambda
    fisher: Literal["sampled", "empirical", "predicted"] = "sampled"
    fisher_samples: int | None = pydantic.Field(None, gt=0)  # examples the Fisher averages over; None: all


def log_likelihood(logits: torch.Tensor, allowed: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """log p(label | x) of each example over its allowed outputs."""
    log_p = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)
    return log_p.gather(-1, label.unsqueeze(-1)).squeeze(-1)


@register
class EWC(SelectivePlasticity):
    """Fine-tuning with a Fisher-weighted quadratic penalty per earlier task."""

    name = "ewc"
    task_kinds = frozenset({CLASSIFICATION})
    Options = EWCOptions

    @property
    def penalty_scale(self) -> float:
        return self.options.strength / 2

    def consolidate(self, importance: list[torch.Tensor]) -> None:
        self.penalty.add_term(importance)

    def importance(self, task_index: int) -> list[torch.Tensor]:
        generator = FISHER_LABELS.generator(self.context.seed, task_index)
        batches = self.task_batches(task_index)
        if self.options.fisher_samples is not None:  # a random subset of the training set
            size = min(self.options.fisher_samples, len(self.context.stream[task_index].train))
            batches = [next(self.context.stream.train_batches(
                self.context.scenario, [task_index], size, generator, seen=task_index + 1))]
        labels = lambda logits, batch: self._fisher_labels(logits, batch, generator)  # noqa: E731
        return mean_gradient_power(self.model, batches, log_likelihood, labels, 2, self.parameters)

    def _fisher_labels(self, logits: torch.Tensor, batch: Batch,
                       generator: torch.Generator) -> torch.Tensor:
        if self.options.fisher == "empirical":
            return batch.y
        logits = logits.masked_fill(~batch.allowed, float("-inf"))
        if self.options.fisher == "predicted":
            return logits.argmax(1)
        probabilities = F.softmax(logits, 1).cpu()
        return torch.multinomial(probabilities, 1, generator=generator)[:, 0].to(batch.y.device)
