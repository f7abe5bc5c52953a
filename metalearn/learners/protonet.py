"""Prototypical Networks: classify a query by its squared Euclidean distance to class means.

Snell, Swersky & Zemel (2017), "Prototypical Networks for Few-shot Learning". The model's
``features`` embed an episode; each class's prototype is the mean embedding of its support
examples, and a query's logits are its negative squared distances to the prototypes. Training
minimises the query cross-entropy of episodes with Adam, its rate halved every
``lr_halving_every`` steps; for Omniglot the paper trains on more classes per episode than it
tests on (60 ways, 5 queries per class, the test's shots), set by ``train_way``,
``train_shot`` and ``train_query`` (None: the protocol's episodes). Nothing adapts at test:
the prototypes of the support set are the classifier.

Conv4 normalises each batch with its own statistics, so an episode's support and queries are
embedded together, one episode at a time (as the reference code embeds them in training).
"""

from __future__ import annotations

from typing import Any, Iterator

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from metalearn.learners.base import EPISODIC, Learner, LearnerContext, LearnerOptions, adam
from metalearn.learners.registry import register
from metalearn.seeding import derive_seed
from metalearn.tasks import EpisodeBatch, EpisodeSampler


class ProtoNetOptions(LearnerOptions):
    """Defaults: the paper's Omniglot setup (1-shot)."""

    lr: float = 1e-3
    lr_halving_every: int = pydantic.Field(2000, ge=1)  # training steps (episodes)
    # Training episodes of the learner's own (one per step), or None for the protocol's
    train_way: int | None = pydantic.Field(60, ge=2)
    train_shot: int = pydantic.Field(1, ge=1)
    train_query: int = pydantic.Field(5, ge=1)


def prototypes(support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """[N, D]: the mean of each class's support embeddings [S, D], labels [S] in 0..N-1."""
    members = F.one_hot(labels, n_way).to(support.dtype)  # [S, N]
    return members.T @ support / members.sum(0)[:, None]


def squared_distances(queries: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[Q, N]: ||queries[q] - centres[n]||^2."""
    return (queries[:, None, :] - centres[None, :, :]).square().sum(-1)


@register
class ProtoNet(Learner):
    """Prototypical Networks with the squared Euclidean distance."""

    name = "protonet"
    task_kinds = frozenset({EPISODIC})
    Options = ProtoNetOptions
    resumes_mid_task = True  # all its state is in state_dict

    def __init__(self, model: nn.Module, options: ProtoNetOptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.embedding = self.model.features
        self.optimizer = adam(self.embedding.parameters(), options.lr)
        self.schedule = torch.optim.lr_scheduler.StepLR(self.optimizer, options.lr_halving_every, 0.5)

    def training_batches(self, task_index: int, phase: str = "train") -> Iterator[EpisodeBatch] | None:
        """One episode a step of ``train_way`` classes from the task's training classes."""
        o = self.options
        if o.train_way is None:
            return None
        sampler = EpisodeSampler(self.context.stream[task_index].train, o.train_way, o.train_shot,
                                 o.train_query, derive_seed(self.context.seed, "protonet.episodes",
                                                            task_index),
                                 name=f"the training classes of task {task_index} (learner.options."
                                      "train_way, train_shot, train_query)")
        return iter(lambda: sampler.sample(1), None)

    def episode_logits(self, support_x: torch.Tensor, support_y: torch.Tensor,
                       query_x: torch.Tensor) -> torch.Tensor:
        """[N*Q, N] negative squared distances of one episode's queries to its prototypes."""
        embedded = self.embedding(torch.cat([support_x, query_x]))
        support, queries = embedded[: len(support_x)], embedded[len(support_x):]
        centres = prototypes(support, support_y, int(support_y.max()) + 1)
        return -squared_distances(queries, centres)

    def meta_gradient(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulate the gradient of the meta-batch's mean query loss into ``.grad``; (mean
        query loss, accuracy)."""
        losses, accuracies = [], []
        for episode in zip(batch.support_x, batch.support_y, batch.query_x, batch.query_y):
            logits = self.episode_logits(*episode[:3])
            loss = F.cross_entropy(logits, episode[3]) / len(batch)
            loss.backward()
            losses.append(loss.detach())
            accuracies.append((logits.argmax(-1) == episode[3]).float().mean() / len(batch))
        return torch.stack(losses).sum(), torch.stack(accuracies).sum()

    def train_step(self, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        self.model.train()
        self.optimizer.zero_grad()
        loss, accuracy = self.meta_gradient(batch)
        values = {"loss": loss, "accuracy": accuracy, **self.take_step(self.optimizer.step)}
        self.schedule.step()
        return values

    @torch.no_grad()
    def predict_episodes(self, batch: EpisodeBatch) -> torch.Tensor:
        self.model.eval()
        return torch.stack([self.episode_logits(*episode) for episode in
                            zip(batch.support_x, batch.support_y, batch.query_x)])

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict()}

    def model_size_bits(self) -> int:
        return sum(p.numel() * p.element_size() * 8 for p in self.embedding.parameters())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The embedding's part of the model only: the head is never used, so a trained
        embedding loads into a model of any ``n_way`` (a run trained on 60-way episodes and
        tested 5-way is tested 20-way by ``metalearn evaluate RUN protocol.n_way=20``)."""
        prefix = next(f"{name}." for name, module in self.model.named_children()
                      if module is self.embedding)
        self.embedding.load_state_dict({key.removeprefix(prefix): value for key, value in
                                        state["model"].items() if key.startswith(prefix)})
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
