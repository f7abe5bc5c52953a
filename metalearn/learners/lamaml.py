"""Look-ahead MAML, La-MAML (Gupta, Yadav & Paull 2020, "La-MAML: Look-ahead Meta Learning
for Continual Learning", NeurIPS; Algorithm 1 and the authors' code, lamaml.py).

Each incoming minibatch is seen ``glances`` times. In each glance the fast weights take one
SGD step per example of the (reshuffled) minibatch, each weight at its own learned rate
alpha; after every step the meta-loss is measured on the minibatch joined with
``replay_batch_size`` examples replayed from memory, and the mean of these meta-losses is
differentiated to the starting weights and to the rates (first order: the inner gradients
are constants, as in the authors' MNIST runs). Both gradients are clipped to norm
``grad_clip_norm`` each. The rates take an SGD step of ``rates_lr``; the weights then move by
their gradient times max(0, alpha), the rates clipped at zero, so a weight whose rate turned
negative stops moving rather than climbing its gradient. The inner steps clip the rates at
zero too, as the authors' code does, so a negative rate gets no gradient and stays.

The memory is a reservoir over the stream, filled in the first glance; from the second task
on, the replay draws only from what it held when the task began (the authors'
``use_old_task_memory``). The defaults are the authors' MNIST Rotations and Permutations
settings (200 memories, 5 glances, alpha_0 = 0.15, rates_lr = 0.3).
"""

from __future__ import annotations

import pydantic
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metalearn.learners.base import LearnerContext, batch_part, masked_cross_entropy
from metalearn.learners.registry import register
from metalearn.learners.replay import ReplayLearner, ReplayOptions, joined
from metalearn.tasks import Batch


class LaMAMLOptions(ReplayOptions):
    alpha_init: float = pydantic.Field(0.15, gt=0)  # every weight's first rate
    rates_lr: float = pydantic.Field(0.3, ge=0)  # SGD on the rates (the code's opt_lr)
    learn_rates: bool = True  # False: the rates stay alpha_init
    glances: int = pydantic.Field(5, ge=1)  # passes over each incoming minibatch
    grad_clip_norm: float = pydantic.Field(2.0, gt=0)


def clip_norm(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """The gradients scaled to total norm at most ``max_norm`` (as clip_grad_norm_)."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    return [g * scale for g in grads]


@register
class LaMAML(ReplayLearner):
    """MAML over the stream with learned per-weight rates, clipped at zero, and replay."""

    name = "lamaml"
    Options = LaMAMLOptions

    def __init__(self, model: torch.nn.Module, options: LaMAMLOptions,
                 context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.names = [name for name, _ in self.model.named_parameters()]
        self.weights = list(self.model.parameters())
        self.rates = [torch.full_like(w, options.alpha_init, requires_grad=True)
                      for w in self.weights]

    def _loss(self, fast: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        logits = functional_call(self.model, dict(zip(self.names, fast)), (batch.x,))
        return masked_cross_entropy(logits, batch)

    def meta_loss(self, batch: Batch, replayed: Batch | None) -> torch.Tensor:
        """The look-ahead: one SGD step per example of ``batch`` at rates max(0, alpha), the
        meta-loss on ``batch`` joined with ``replayed`` after each; their mean."""
        meta_batch = joined(batch, replayed)
        fast = self.weights
        losses = []
        for i in range(len(batch)):
            inner = self._loss(fast, batch_part(batch, slice(i, i + 1)))
            grads = torch.autograd.grad(inner, fast)  # first order: constants from here on
            fast = [w - g * F.relu(rate) for w, g, rate in zip(fast, grads, self.rates)]
            losses.append(self._loss(fast, meta_batch))
        return torch.stack(losses).mean()

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.model.train()
        options = self.options
        for glance in range(options.glances):
            batch = batch_part(batch, torch.randperm(len(batch), generator=self.draws))
            source = self.past if self.task > 0 else self.memory
            replayed = source.sample(options.replay_batch_size, self.draws, self.context,
                                     seen=self.task + 1)
            loss = self.meta_loss(batch, replayed)
            grads = torch.autograd.grad(loss, self.weights + self.rates)
            weight_grads = clip_norm(grads[: len(self.weights)], options.grad_clip_norm)
            rate_grads = clip_norm(grads[len(self.weights):], options.grad_clip_norm)
            with torch.no_grad():
                if options.learn_rates:
                    torch._foreach_add_(self.rates, rate_grads, alpha=-options.rates_lr)
                for weight, grad, rate in zip(self.weights, weight_grads, self.rates):
                    weight -= grad * rate.clamp(min=0)
            if glance == 0:
                self.remember(batch)
        return {"loss": loss.detach(),
                "mean_rate": torch.stack([r.detach().clamp(min=0).mean() for r in self.rates]).mean()}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rates": [r.detach().clone() for r in self.rates]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for rate, saved in zip(self.rates, state["rates"]):
                rate.copy_(saved)
