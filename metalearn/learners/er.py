"""Experience replay with a reservoir buffer (Chaudhry et al. 2019, "On Tiny Episodic Memories
in Continual Learning"; Algorithm 4 of Riemer et al. 2019, "Learning to Learn without
Forgetting by Maximizing Transfer and Minimizing Interference").

Every step is one SGD step on the current minibatch concatenated with ``replay_batch_size``
examples drawn from the memory; then the current minibatch is offered to the reservoir.
"""

from __future__ import annotations

import torch

from metalearn.learners.base import LearnerContext, masked_cross_entropy
from metalearn.learners.registry import register
from metalearn.learners.replay import ReplayLearner, ReplayOptions, joined
from metalearn.tasks import Batch


class EROptions(ReplayOptions):
    lr: float = 0.1  # SGD, as Chaudhry et al. and MER's code use on MNIST


@register
class ExperienceReplay(ReplayLearner):
    """SGD on the current minibatch plus a replayed one from a reservoir memory."""

    name = "er"
    Options = EROptions

    def __init__(self, model: torch.nn.Module, options: EROptions,
                 context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=options.lr)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.model.train()
        both = joined(batch, self.replay())
        loss = masked_cross_entropy(self.model(both.x), both)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.remember(batch)
        return {"loss": loss.detach()}
