"""PackNet (Mallya & Lazebnik 2018, "PackNet: Adding Multiple Tasks to a Single Network by
Iterative Pruning", CVPR): one network, a disjoint set of weights per task.

Every weight of an ``nn.Linear`` or ``nn.Conv2d`` (the head included) has an owner: free, or
the task that kept it. A task trains only free weights; then the smallest-magnitude
``prune_fraction`` of the weights it trained (per layer) are pruned back to free, at zero, the
survivors are retrained alone on the task's data (the phase ``retrain``), and the task owns
them from then on. Task t is
predicted with the weights of tasks 0..t only, so later tasks cannot change its predictions.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import pydantic
import torch
from torch import nn
from torch.func import functional_call

from metalearn.learners.base import (
    CLASSIFICATION,
    Learner,
    LearnerContext,
    Phase,
    adam,
    masked_cross_entropy,
)
from metalearn.learners.finetune import FineTuneOptions
from metalearn.learners.registry import register
from metalearn.seeding import reserved
from metalearn.tasks import Batch, Scenario

RETRAIN_BATCHES = reserved("packnet.retrain_batches")
FREE = 0  # owner of a weight no task keeps; task t's weights have owner t + 1


def largest_kept(weight: torch.Tensor, candidates: torch.Tensor, prune_fraction: float) -> torch.Tensor:
    """Where ``weight`` survives pruning (bool, its shape): the largest-magnitude
    ``1 - prune_fraction`` of the ``candidates`` entries (ties to the earlier entry)."""
    positions = candidates.flatten().nonzero().squeeze(1)
    keep = len(positions) - round(prune_fraction * len(positions))
    largest = torch.argsort(weight.flatten()[positions].abs(), descending=True, stable=True)
    kept = torch.zeros_like(candidates)
    kept.view(-1)[positions[largest[:keep]]] = True
    return kept


class PackNetOptions(FineTuneOptions):
    prune_fraction: float = pydantic.Field(0.5, ge=0, lt=1)  # of the weights each task trained
    retrain_steps: int = pydantic.Field(1000, ge=0)  # on the survivors, after pruning
    retrain_lr: float = 1e-4  # the paper's code retrains at a tenth of the training lr
    batch_size: int = 128  # retraining minibatch


@register
class PackNet(Learner):
    """Mallya & Lazebnik (2018): train the free weights, prune, retrain the survivors, freeze them.

    Task-incremental only: a prediction needs the task's identity to choose whose weights to
    use, so domain- and class-incremental runs are refused before training. Biases and
    BatchNorm (parameters and running statistics) train on the first task only and are frozen
    afterwards, as in the paper's code (``train_biases``/``train_bn`` off after the first task).
    Each training phase (a task, its retraining) gets a fresh Adam, whose state for the frozen
    entries is zero; their gradients are zeroed too, so their update is exactly zero.

    A weight that a task never moved (another task's rows of the head, an input pixel that is
    always zero) is not counted as trained: it is left free for later tasks instead of pruned
    or kept. Tasks not trained yet are evaluated with the network as it stands: every trained
    task's weights (free weights are zero after each task), and before any training the
    initial network, the same ``b`` as every other learner's.
    """

    name = "packnet"
    task_kinds = frozenset({CLASSIFICATION})
    scenarios = frozenset({Scenario.TASK})
    Options = PackNetOptions

    def __init__(self, model: nn.Module, options: PackNetOptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        names = {id(p): name for name, p in self.model.named_parameters()}
        self.weights = {names[id(m.weight)]: m.weight for m in self.model.modules()
                        if isinstance(m, (nn.Linear, nn.Conv2d))}
        self.owners = [torch.zeros_like(w, dtype=torch.int32) for w in self.weights.values()]
        prunable = {id(w) for w in self.weights.values()}
        self.first_task_only = [p for p in self.model.parameters()
                                if p.requires_grad and id(p) not in prunable]
        self.batch_norms = [m for m in self.model.modules()
                            if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.tasks_trained = 0
        self.task_index = 0

    def begin_task(self, task_index: int) -> None:
        self.task_index = task_index
        for p in self.first_task_only:
            p.requires_grad_(task_index == 0)
        self.at_start = [w.detach().clone() for w in self.weights.values()]
        self._start_phase(FREE, self.options.lr)

    def _start_phase(self, trainable_owner: int, lr: float) -> None:
        """Train only the weights of ``trainable_owner`` (and the first task's biases), from a
        fresh Adam."""
        self.frozen = [owner != trainable_owner for owner in self.owners]
        self.optimizer = adam([p for p in self.model.parameters() if p.requires_grad], lr,
                              self.options.betas)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"loss": self._step(batch)}

    def _step(self, batch: Batch) -> torch.Tensor:
        self.model.train()
        for module in self.batch_norms:  # running statistics, too, are the first task's
            module.train(self.task_index == 0)
        loss = masked_cross_entropy(self.model(batch.x), batch)
        self.optimizer.zero_grad()
        loss.backward()
        for w, frozen in zip(self.weights.values(), self.frozen):
            w.grad.masked_fill_(frozen, 0)
        self.optimizer.step()
        return loss.detach()

    def phases(self, task_index: int, steps: int) -> list[Phase]:
        """Training on the free weights, then retraining the survivors of pruning."""
        return [Phase("train", steps), Phase("retrain", self.options.retrain_steps)]

    def begin_phase(self, task_index: int, phase: str) -> None:
        """Before retraining: prune the task's smallest trained weights; the survivors train."""
        if phase == "retrain":
            self._prune(task_index)
            self._start_phase(task_index + 1, self.options.retrain_lr)

    def training_batches(self, task_index: int, phase: str = "train") -> Iterator[Batch] | None:
        """Retraining draws its own minibatches (``options.batch_size``)."""
        if phase != "retrain":
            return None
        return self.context.stream.train_batches(
            self.context.scenario, [task_index], self.options.batch_size,
            RETRAIN_BATCHES.generator(self.context.seed, task_index), seen=task_index + 1,
            setting="learner.options.batch_size",
        )

    @torch.no_grad()
    def _prune(self, task_index: int) -> None:
        """Task ``task_index`` keeps the largest ``1 - prune_fraction`` of the weights it
        trained; the rest go back to free, at zero."""
        for w, owner, start in zip(self.weights.values(), self.owners, self.at_start):
            trained = (owner == FREE) & (w != start)
            owner[largest_kept(w, trained, self.options.prune_fraction)] = task_index + 1
            w.masked_fill_(owner == FREE, 0)
        del self.at_start

    def end_task(self, task_index: int) -> None:
        """The task's kept weights are its own from now on."""
        self.tasks_trained = task_index + 1

    def model_size_bits(self) -> int:
        """The network, plus each prunable weight's owner: ceil(log2(tasks + 1)) bits."""
        owner_bits = max(1, math.ceil(math.log2(self.tasks_trained + 1)))
        return super().model_size_bits() + owner_bits * sum(o.numel() for o in self.owners)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_index: int | None) -> torch.Tensor:
        if task_index is None:
            raise ValueError("PackNet predicts with one task's weights: it needs the task index")
        self.model.eval()
        if task_index >= self.tasks_trained:
            return self.model(x)
        masked = {name: torch.where((owner > FREE) & (owner <= task_index + 1), w, 0)
                  for (name, w), owner in zip(self.weights.items(), self.owners)}
        return functional_call(self.model, masked, (x,))

    def capacity(self) -> dict[str, float]:
        """Fraction of the prunable weights owned by each trained task (``"task_0"``, ...) and
        still ``"free"``."""
        total = sum(owner.numel() for owner in self.owners)
        counts = torch.stack([torch.bincount(owner.flatten(), minlength=self.tasks_trained + 1)
                              for owner in self.owners]).sum(0).tolist()
        return {"free": counts[FREE] / total,
                **{f"task_{t}": counts[t + 1] / total for t in range(self.tasks_trained)}}

    def report(self, task_index: int) -> dict[str, float]:
        """The fraction of the prunable weights task ``task_index`` kept, and the fraction left
        free for later tasks (kept per task in the run's results)."""
        capacity = self.capacity()
        return {"capacity_used": capacity[f"task_{task_index}"], "capacity_free": capacity["free"]}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "owners": self.owners, "tasks_trained": self.tasks_trained}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for owner, saved in zip(self.owners, state["owners"]):
            owner.copy_(saved)
        self.tasks_trained = state["tasks_trained"]
