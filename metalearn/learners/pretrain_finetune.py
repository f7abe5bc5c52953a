"""Pretrain, then fine-tune: the standard non-meta-learning baseline for few-shot learning.

Pretraining is ordinary multi-class training on every meta-training class at once. For each
test episode a fresh linear classifier is then trained on the frozen features of the support
set, as in the "Baseline" of Chen et al. (2019), "A Closer Look at Few-shot Classification";
MAML (Finn et al. 2017) compares against the same idea.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from metalearn.learners.base import EPISODIC, Learner, LearnerContext, LearnerOptions, adam
from metalearn.learners.registry import register
from metalearn.seeding import reserved
from metalearn.tasks import EpisodeBatch

PRETRAIN_BATCHES = reserved("pretrain_finetune.batches")


class PretrainFineTuneOptions(LearnerOptions):
    lr: float = 1e-3
    batch_size: int = 64
    finetune_steps: int = 100
    finetune_lr: float = 0.01


@register
class PretrainFineTune(Learner):
    """Multi-class pretraining on the training classes; a new linear head per test episode."""

    name = "pretrain_finetune"
    task_kinds = frozenset({EPISODIC})
    Options = PretrainFineTuneOptions
    resumes_mid_task = True  # all its state is in state_dict

    def __init__(self, model: nn.Module, options: PretrainFineTuneOptions,
                 context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self._new_optimizer()

    def _new_optimizer(self) -> None:
        self.optimizer = adam(self.model.parameters(), self.options.lr)

    def begin_task(self, task_index: int) -> None:
        """Give the model a head over this task's training classes."""
        task = self.episodic_task(task_index)
        head = self.model.head
        if head.out_features != len(task.train):
            self.model.head = nn.Linear(head.in_features, len(task.train)).to(self.context.device)
            self._new_optimizer()

    def training_batches(self, task_index: int, phase: str = "train") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Plain minibatches over every training class at once, instead of episodes."""
        return self.episodic_task(task_index).train.batches(
            self.options.batch_size,
            PRETRAIN_BATCHES.generator(self.context.seed, task_index),
            name=f"the training classes of task {task_index}", setting="learner.options.batch_size",
        )

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        self.model.train()
        loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def predict_episodes(self, batch: EpisodeBatch) -> torch.Tensor:
        """Train one linear head per episode on frozen support features, all episodes at once."""
        self.model.eval()
        with torch.no_grad():
            support = self._embed(batch.support_x)
            query = self._embed(batch.query_x)
        n_episodes, n_way = len(batch), int(batch.support_y.max()) + 1
        weight = torch.zeros(n_episodes, n_way, support.shape[-1], device=support.device,
                             requires_grad=True)
        bias = torch.zeros(n_episodes, n_way, device=support.device, requires_grad=True)
        optimizer = adam([weight, bias], self.options.finetune_lr)
        with torch.enable_grad():
            for _ in range(self.options.finetune_steps):
                logits = torch.baddbmm(bias[:, None], support, weight.transpose(1, 2))
                # Summed over episodes: each episode's head gets its own episode's gradient.
                loss = F.cross_entropy(logits.flatten(0, 1), batch.support_y.flatten(),
                                       reduction="sum") / batch.support_y.shape[1]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return torch.baddbmm(bias[:, None], query, weight.transpose(1, 2)).detach()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features of [B, S, C, H, W] images as [B, S, D]."""
        return self.model.features(x.flatten(0, 1)).view(*x.shape[:2], -1)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        head = state["model"]["head.weight"]
        if head.shape != self.model.head.weight.shape:  # resumed after begin_task resized it
            self.model.head = nn.Linear(head.shape[1], head.shape[0]).to(self.context.device)
            self._new_optimizer()
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
