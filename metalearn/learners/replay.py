"""What the rehearsal learners share (ER, A-GEM, MER, La-MAML): a reservoir buffer of past
examples and a learner base that keeps one, fills it from the stream and predicts plainly.

Reservoir sampling (Vitter 1985, "Random sampling with a reservoir", Algorithm R): after n
examples were offered to a buffer of capacity m, each of them is held with probability m / n,
whatever the order, so the buffer is a uniform sample of the stream seen so far. This is the
memory of Chaudhry et al. 2019 ("On Tiny Episodic Memories in Continual Learning"), Riemer et
al. 2019 (MER) and Gupta et al. 2020 (La-MAML).
"""

from __future__ import annotations

import copy

import pydantic
import torch

from metalearn.learners.base import (
    CLASSIFICATION,
    Learner,
    LearnerContext,
    LearnerOptions,
)
from metalearn.seeding import derive_generator
from metalearn.tasks import Batch


def joined(batch: Batch, other: Batch | None) -> Batch:
    """One minibatch of both (``batch`` alone if ``other`` is None)."""
    if other is None:
        return batch
    return Batch(*(torch.cat(pair) for pair in zip(
        (batch.x, batch.y, batch.allowed, batch.task_ids),
        (other.x, other.y, other.allowed, other.task_ids))))


class ReservoirBuffer:
    """At most ``capacity`` examples (inputs, scenario labels, task ids), a uniform sample of
    every example offered to :meth:`add` so far."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a replay memory holds at least one example, got capacity {capacity}")
        self.capacity = capacity
        self.offered = 0  # examples offered so far, kept or not
        self.x: torch.Tensor | None = None  # [capacity, ...], allocated by the first add
        self.y = torch.empty(0, dtype=torch.int64)
        self.task_ids = torch.empty(0, dtype=torch.int64)

    def __len__(self) -> int:
        return min(self.offered, self.capacity)

    def add(self, x: torch.Tensor, y: torch.Tensor, task_ids: torch.Tensor,
            generator: torch.Generator) -> None:
        """Offer the examples in order: the n-th offered fills a free slot while there is one,
        then replaces slot j, j uniform in 0..n-1, if j < capacity (else it is dropped)."""
        if self.x is None:
            self.x = x.new_zeros((self.capacity, *x.shape[1:]))
            self.y = y.new_zeros(self.capacity)
            self.task_ids = task_ids.new_zeros(self.capacity)
        for k in range(len(y)):
            self.offered += 1
            slot = self.offered - 1
            if slot >= self.capacity:
                slot = int(torch.randint(self.offered, (), generator=generator))
                if slot >= self.capacity:
                    continue
            self.x[slot], self.y[slot], self.task_ids[slot] = x[k], y[k], task_ids[k]

    def sample(self, n: int, generator: torch.Generator, context: LearnerContext,
               seen: int) -> Batch | None:
        """min(n, len) distinct stored examples drawn uniformly, as a Batch scored in today's
        scenario (``seen`` tasks trained so far, the current one included); None if empty."""
        if len(self) == 0:
            return None
        index = torch.randperm(len(self), generator=generator)[:n].to(self.y.device)
        task_ids = self.task_ids[index]
        allowed = context.stream.allowed_outputs(context.scenario, task_ids, seen)
        return Batch(self.x[index], self.y[index], allowed, task_ids)

    def frozen_copy(self) -> ReservoirBuffer:
        """A copy that later ``add`` calls on this buffer do not change (the memory of past
        tasks as it was when a task began)."""
        other = copy.copy(self)
        if self.x is not None:
            other.x, other.y, other.task_ids = self.x.clone(), self.y.clone(), self.task_ids.clone()
        return other

    def state_dict(self) -> dict:
        stored = slice(0, len(self))
        return {"offered": self.offered, "x": None if self.x is None else self.x[stored],
                "y": self.y[stored], "task_ids": self.task_ids[stored]}

    def load_state_dict(self, state: dict) -> None:
        self.offered, self.x = state["offered"], None
        if state["x"] is not None:
            self.offered = 0
            self.add(state["x"], state["y"], state["task_ids"], torch.Generator())  # refills in order
            self.offered = state["offered"]


class ReplayOptions(LearnerOptions):
    memories: int = pydantic.Field(200, ge=1)  # examples the reservoir holds
    replay_batch_size: int = pydantic.Field(10, ge=1)  # stored examples replayed per step


class ReplayLearner(Learner):
    """Base of the rehearsal learners: a reservoir of the examples trained on, filled after
    each step (:meth:`remember`), a frozen copy of it as it was when the current task began
    (``past``: the earlier tasks' memory), and a random stream per task to draw replays with."""

    task_kinds = frozenset({CLASSIFICATION})
    Options = ReplayOptions

    def __init__(self, model: torch.nn.Module, options: ReplayOptions,
                 context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.memory = ReservoirBuffer(options.memories)
        self.past = self.memory.frozen_copy()
        self.task = 0

    def begin_task(self, task_index: int) -> None:
        self.task = task_index
        self.past = self.memory.frozen_copy()
        self.draws = derive_generator(self.context.seed, f"{self.name}.replay_draws", task_index)

    def replay(self, n: int | None = None) -> Batch | None:
        """``n`` (default: ``replay_batch_size``) stored examples, scored in today's scenario."""
        return self.memory.sample(n or self.options.replay_batch_size, self.draws, self.context,
                                  seen=self.task + 1)

    def remember(self, batch: Batch) -> None:
        self.memory.add(batch.x, batch.y, batch.task_ids, self.draws)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_index: int | None) -> torch.Tensor:
        self.model.eval()
        return self.model(x)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.memory.load_state_dict(state["memory"])
