"""A learner written outside metalearn: fine-tuning plus a small experience-replay buffer.

Run it with ``metalearn run`` after importing this file (or installing it as a plug-in through
the ``metalearn.learners`` entry-point group); see docs/learners.md.
"""

from __future__ import annotations

import torch

from metalearn.learners import (
    CLASSIFICATION,
    Learner,
    LearnerOptions,
    adam,
    masked_cross_entropy,
    register,
)
from metalearn.seeding import derive_generator
from metalearn.tasks import Batch


class ReplayOptions(LearnerOptions):
    lr: float = 1e-3
    per_task: int = 100  # examples kept from each finished task (at most one minibatch)


@register
class Replay(Learner):
    """Each step trains on the current minibatch plus an equal share drawn from the buffer."""

    name = "replay_example"
    task_kinds = frozenset({CLASSIFICATION})
    Options = ReplayOptions

    def __init__(self, model, options, context):
        super().__init__(model, options, context)
        self.optimizer = adam(self.model.parameters(), options.lr)
        self.buffer: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # x, y, task ids

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.model.train()
        loss = masked_cross_entropy(self.model(batch.x), batch)
        if self.buffer:
            # A stream of its own, never the global generator, so runs reproduce and resume.
            pick = torch.randint(len(self.buffer), (), generator=self.draws)
            x, y, task_ids = self.buffer[int(pick)]
            # Old examples compete over today's outputs (in class-IL: every class seen so far).
            allowed = self.context.stream.allowed_outputs(self.context.scenario, task_ids,
                                                          seen=self.task + 1)
            loss = (loss + masked_cross_entropy(self.model(x), Batch(x, y, allowed, task_ids))) / 2
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self._last = batch
        return {"loss": loss.detach()}

    def begin_task(self, task_index: int) -> None:
        self.task = task_index
        self.draws = derive_generator(self.context.seed, "replay_example.draws", task_index)

    def end_task(self, task_index: int) -> None:
        keep = slice(0, self.options.per_task)  # the last minibatch is already shuffled
        self.buffer.append((self._last.x[keep], self._last.y[keep], self._last.task_ids[keep]))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_index: int | None) -> torch.Tensor:
        self.model.eval()
        return self.model(x)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict(),
                "buffer": [list(memory) for memory in self.buffer]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer = [tuple(memory) for memory in state["buffer"]]
