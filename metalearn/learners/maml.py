"""MAML: learn an initialisation from which a few gradient steps solve a new task.

Finn, Abbeel & Levine (2017), "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks". For each episode of a meta-batch the inner loop takes ``inner_steps`` SGD steps on
the support set; the meta-loss is the query loss of the adapted parameters, averaged over
episodes, and the outer Adam step follows its exact gradient, second-order terms included.
``first_order`` drops them (FOMAML, same paper; Nichol et al. 2018). The inner loop is
``metalearn.learners.inner_loop``: pure torch.func functions, vmapped or looped over episodes;
several processes share a meta-batch out (``metalearn.distributed``).

Memory: second-order MAML keeps every inner step's activations and their gradient graph until
the backward pass, so it grows linearly with ``inner_steps``; the graph is freed at the end of
each ``train_step``.
"""

from __future__ import annotations

import abc
from typing import Any

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from metalearn.distributed import shard, sum_gradients
from metalearn.learners.base import EPISODIC, Learner, LearnerContext, LearnerOptions, adam
from metalearn.learners.inner_loop import Batching, FunctionalModel, Parameters
from metalearn.learners.registry import register
from metalearn.tasks import EpisodeBatch


class MAMLOptions(LearnerOptions):
    """Defaults: the paper's Omniglot 5-way setup."""

    inner_lr: float = 0.4
    inner_steps: int = pydantic.Field(1, ge=1)
    eval_inner_steps: int = pydantic.Field(3, ge=0)
    first_order: bool = False
    lr: float = 1e-3  # outer Adam
    transductive: bool = True  # queries normalised together (see inner_loop), training and test
    batching: Batching = "auto"


class EpisodicMetaLearner(Learner):
    """The episode loop of learners that adapt a learned initialisation to each support set and
    meta-learn through the query loss: an outer Adam step on the meta-batch's mean query loss,
    episodes vmapped or looped. A subclass says how to ``adapt``; its options have
    ``inner_steps``, ``eval_inner_steps``, ``lr``, ``transductive`` and ``batching``."""

    task_kinds = frozenset({EPISODIC})
    resumes_mid_task = True  # all its state is in state_dict
    distributed = True  # episodes sharded, meta-gradients summed across processes

    def __init__(self, model: nn.Module, options: LearnerOptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.functional = FunctionalModel(self.model, options.batching)
        self.optimizer = adam(self.meta_parameters(), options.lr)

    def meta_parameters(self) -> list[torch.Tensor]:
        """What the outer loop learns: the initialisation (and what a subclass adds)."""
        return list(self.model.parameters())

    @abc.abstractmethod
    def adapt(self, params: Parameters, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int) -> Parameters:
        """``steps`` inner updates from ``params`` on one episode's support set."""

    def _episode_loss(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                      query_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query loss, query accuracy) of one episode after the inner loop."""
        adapted = self.adapt(self.functional.parameters(), support_x, support_y,
                             self.options.inner_steps)
        logits = self.functional.query_logits(adapted, support_x, query_x, self.options.transductive)
        return F.cross_entropy(logits, query_y), (logits.argmax(-1) == query_y).float().mean()

    def meta_gradient(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulate the meta-gradient of ``batch`` into ``.grad``; (mean query loss, accuracy).

        Over several processes each differentiates its shard of the episodes and the shards'
        sums are added in rank order (``metalearn.distributed``), so every process holds the
        whole meta-batch's gradient, loss and accuracy.
        """
        mine = batch[shard(len(batch))]
        sums = self._shard_meta_gradient(mine, len(batch))
        loss, accuracy = sum_gradients(self.meta_parameters(), sums)
        return loss, accuracy

    def _shard_meta_gradient(self, batch: EpisodeBatch, total: int) -> torch.Tensor:
        """Accumulate the gradient of ``batch``'s query losses summed, divided by ``total``
        (the meta-batch's size), into ``.grad``; [loss, accuracy] summed and divided likewise.

        Without vmap each episode is differentiated on its own, so only one episode's graph
        is held at a time.
        """
        episodes = (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        if self.functional.batching == "vmap":
            losses, accuracies = self.functional.map_episodes(self._episode_loss, *episodes)
            (losses.sum() / total).backward()
            return torch.stack([losses.detach().sum(), accuracies.sum().to(losses.dtype)]) / total
        meta_parameters = [p for p in self.meta_parameters() if p.requires_grad]

        def episode(*tensors: torch.Tensor) -> tuple[tuple[torch.Tensor | None, ...], torch.Tensor,
                                                     torch.Tensor]:
            loss, accuracy = self._episode_loss(*tensors)
            gradients = torch.autograd.grad(loss, meta_parameters, allow_unused=True)
            return gradients, loss.detach(), accuracy

        gradients, loss, accuracy = self.functional.sum_episodes(episode, *episodes)
        for parameter, gradient in zip(meta_parameters, gradients):
            if gradient is None:  # as backward(): a parameter no episode reaches keeps its .grad
                continue
            gradient = gradient / total
            parameter.grad = gradient if parameter.grad is None else parameter.grad + gradient
        return torch.stack([loss, accuracy.to(loss.dtype)]) / total

    def train_step(self, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        self.model.train()
        self.optimizer.zero_grad()
        loss, accuracy = self.meta_gradient(batch)
        return {"loss": loss, "accuracy": accuracy, **self.take_step(self.optimizer.step)}

    @torch.no_grad()  # torch.func.grad still differentiates the inner loop
    def predict_episodes(self, batch: EpisodeBatch) -> torch.Tensor:
        """``eval_inner_steps`` inner steps on each support set, then the query logits."""
        self.model.eval()
        params = self.functional.parameters()

        def adapt(support_x: torch.Tensor, support_y: torch.Tensor) -> Parameters:
            return self.adapt(params, support_x, support_y, self.options.eval_inner_steps)

        return self.functional.adapted_query_logits(
            adapt, batch.support_x, batch.query_x, (batch.support_x, batch.support_y),
            self.options.transductive)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])


@register
class MAML(EpisodicMetaLearner):
    """Model-agnostic meta-learning (second order unless ``first_order``)."""

    name = "maml"
    Options = MAMLOptions

    def inner_lrs(self) -> dict[str, float | torch.Tensor]:
        """The inner learning rate of each parameter, by name."""
        return {name: self.options.inner_lr for name, _ in self.model.named_parameters()}

    def adapt(self, params: Parameters, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int) -> Parameters:
        """``steps`` inner SGD steps from ``params`` on one episode's support set."""
        return self.functional.sgd(params, support_x, support_y, steps, self.inner_lrs(),
                                   self.options.first_order)
