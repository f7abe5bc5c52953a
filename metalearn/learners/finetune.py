"""Fine-tuning ("None" in van de Ven & Tolias 2019): train on each task in turn, no protection.

The lower bound of continual learning: whatever the model learned on earlier tasks is free to
be overwritten.
"""

from __future__ import annotations

import torch

from metalearn.learners.base import (
    CLASSIFICATION,
    Learner,
    LearnerContext,
    LearnerOptions,
    adam,
    check_data_parallel,
    minibatch_gradient,
)
from metalearn.learners.registry import register
from metalearn.tasks import Batch


class FineTuneOptions(LearnerOptions):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@register
class FineTune(Learner):
    """Adam on the current task's cross-entropy, in the scenario's label space."""

    name = "finetune"
    task_kinds = frozenset({CLASSIFICATION})
    Options = FineTuneOptions
    distributed = True  # data-parallel: a shard of each minibatch, gradients summed

    def __init__(self, model: torch.nn.Module, options: FineTuneOptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        check_data_parallel(self.model)
        self.optimizer = adam(self.model.parameters(), options.lr, options.betas)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.model.train()
        self.optimizer.zero_grad()
        loss = minibatch_gradient(self.model, batch)
        self.optimizer.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_index: int | None) -> torch.Tensor:
        self.model.eval()
        return self.model(x)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
