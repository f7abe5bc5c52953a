"""Meta-Experience Replay, MER (Riemer, Cases, Ajemian, Liu, Rish, Tu & Tesauro 2019,
"Learning to Learn without Forgetting by Maximizing Transfer and Minimizing Interference",
ICLR; Algorithm 1, as in the authors' code, meralg1.py).

Each incoming example (x, y) is learned as Reptile learns a task, with the memory as the
tasks: ``batches_per_example`` (s) times, a batch is the example followed by
``replay_batch_size`` (k - 1) examples drawn from the reservoir, and plain SGD (rate ``lr``,
alpha) takes one step on each of its examples in turn; after each batch the weights move back
to ``beta`` of the way from where the batch began (within-batch Reptile), and after the s
batches to ``gamma`` of the way from where the example began (across-batch Reptile). Then the
example is offered to the reservoir. Reptile's first-order meta-gradient favours weights whose
gradients on different examples align: transfer up, interference down.

The defaults are the authors' MNIST Rotations setting with 200 memories (lr 0.1, beta 0.01,
gamma 1, k - 1 = 10, s = 5); benchmarks/mer/ lists the others. The protocol's minibatch (10
examples) is learned example by example, in its order, as the authors' code does.
"""

from __future__ import annotations

import pydantic
import torch

from metalearn.learners.base import LearnerContext, batch_part, masked_cross_entropy
from metalearn.learners.registry import register
from metalearn.learners.replay import ReplayLearner, ReplayOptions, joined
from metalearn.tasks import Batch


class MEROptions(ReplayOptions):
    lr: float = 0.1  # alpha: SGD's rate on each example of a batch
    beta: float = pydantic.Field(0.01, gt=0, le=1)  # within-batch Reptile rate
    gamma: float = pydantic.Field(1.0, gt=0, le=1)  # across-batch Reptile rate
    batches_per_example: int = pydantic.Field(5, ge=1)  # s


def interpolate_(weights: list[torch.Tensor], start: list[torch.Tensor], rate: float) -> None:
    """Reptile's step, in place: weights <- start + rate * (weights - start)."""
    with torch.no_grad():
        for weight, origin in zip(weights, start):
            weight.copy_(origin.lerp(weight, rate))


@register
class MER(ReplayLearner):
    """Reptile over batches of an incoming example and replayed memories."""

    name = "mer"
    Options = MEROptions

    def __init__(self, model: torch.nn.Module, options: MEROptions,
                 context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.weights = list(self.model.parameters())

    def _sgd_step(self, example: Batch) -> torch.Tensor:
        loss = masked_cross_entropy(self.model(example.x), example)
        grads = torch.autograd.grad(loss, self.weights)
        with torch.no_grad():
            torch._foreach_add_(self.weights, grads, alpha=-self.options.lr)
        return loss.detach()

    def _learn_example(self, example: Batch) -> torch.Tensor:
        """Algorithm 1 for one incoming example; the mean loss of its SGD steps."""
        losses = []
        example_start = [w.detach().clone() for w in self.weights]
        for _ in range(self.options.batches_per_example):
            batch_start = [w.detach().clone() for w in self.weights]
            batch = joined(example, self.replay())
            losses += [self._sgd_step(batch_part(batch, slice(j, j + 1)))
                       for j in range(len(batch))]
            interpolate_(self.weights, batch_start, self.options.beta)
        interpolate_(self.weights, example_start, self.options.gamma)
        self.remember(example)
        return torch.stack(losses).mean()

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.model.train()
        losses = [self._learn_example(batch_part(batch, slice(i, i + 1)))
                  for i in range(len(batch))]
        return {"loss": torch.stack(losses).mean()}
