"""Reptile: train on a task, then move the initialisation towards the trained weights.

Nichol, Achiam & Schulman (2018), "On First-Order Meta-Learning Algorithms". For each episode
of a meta-batch the inner loop takes ``inner_steps`` Adam (or SGD) steps on minibatches of
the episode's examples; the initialisation then moves a fraction ``epsilon`` of the way to the
mean of the adapted weights, ``theta <- theta + epsilon (mean_i phi_i - theta)``, with
``epsilon`` annealed linearly from ``meta_step`` to ``meta_step_final`` over ``anneal_steps``
iterations, as in the paper. No gradient flows through the inner loop, so memory does not grow
with ``inner_steps``. Evaluation adapts likewise on the support set, then classifies the queries.

As in the reference code, the inner Adam's state (moments and step count) carries from episode
to episode through meta-training, so training visits episodes one after another, and every test
episode starts from the state training left (``inner_state: fresh`` starts each episode from
zero instead). Departure from the reference code: the training examples of an episode are its
support and query examples, ``train_shots`` per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pydantic
import torch
from torch import nn

from metalearn.distributed import shard, sum_in_order
from metalearn.learners.base import EPISODIC, Learner, LearnerContext, LearnerOptions
from metalearn.learners.inner_loop import Batching, FunctionalModel, Parameters
from metalearn.learners.registry import register
from metalearn.seeding import reserved
from metalearn.tasks import EpisodeBatch

INNER_BATCHES = reserved("reptile.inner_batches")  # minibatch order in training
EVAL_INNER_BATCHES = reserved("reptile.eval_inner_batches")  # and in evaluation
ADAM_EPSILON = 1e-8


class ReptileOptions(LearnerOptions):
    """Defaults: the paper's command for non-transductive Omniglot 5-way 1-shot."""

    inner_steps: int = pydantic.Field(12, ge=1)
    inner_batch_size: int = pydantic.Field(5, ge=1)
    inner_lr: float = 0.00044
    inner_optimizer: Literal["adam", "sgd"] = "adam"
    betas: tuple[float, float] = (0.0, 0.999)  # the inner Adam's; beta1 = 0 as in the paper
    train_shots: int | None = pydantic.Field(12, ge=1)  # per class; None: all K + Q
    meta_step: float = 1.0
    meta_step_final: float = 0.0
    anneal_steps: int = pydantic.Field(200_000, ge=1)  # set to protocol.steps_per_task
    eval_inner_steps: int = pydantic.Field(86, ge=1)
    eval_inner_batch_size: int = pydantic.Field(5, ge=1)
    transductive: bool = False
    # carried: the inner Adam's state runs on across training episodes, and test episodes start
    # from it (the reference code); fresh: every episode starts from a zero state
    inner_state: Literal["carried", "fresh"] = "carried"
    batching: Batching = "auto"  # over test episodes, and training ones with a fresh state


def minibatch_indices(n_episodes: int, n_examples: int, steps: int, batch_size: int,
                      generator: torch.Generator) -> torch.Tensor:
    """[E, steps, batch_size] example indices: each episode's examples in shuffled passes, cut
    into minibatches (one may straddle two passes, as in the reference code)."""
    passes = -(-steps * batch_size // n_examples)
    order = torch.rand(n_episodes, passes, n_examples, generator=generator).argsort(-1)
    return order.flatten(1)[:, : steps * batch_size].reshape(n_episodes, steps, batch_size)


def carries_state(options: ReptileOptions) -> bool:
    """True if the inner Adam's state runs on from one training episode to the next."""
    return options.inner_optimizer == "adam" and options.inner_state == "carried"


@dataclass
class AdamState:
    """The inner Adam's running moments and the number of steps it has taken."""

    moments: Parameters
    squares: Parameters
    step: int = 0

    @classmethod
    def zeros(cls, params: Parameters) -> AdamState:
        return cls({name: torch.zeros_like(p) for name, p in params.items()},
                   {name: torch.zeros_like(p) for name, p in params.items()})

    def directions(self, gradients: Parameters, betas: tuple[float, float]) -> tuple[Parameters, AdamState]:
        """Adam's bias-corrected ``m / (sqrt(v) + eps)`` for the next step, and the state after it."""
        beta1, beta2 = betas
        step = self.step + 1
        moments = {name: beta1 * self.moments[name] + (1 - beta1) * g for name, g in gradients.items()}
        squares = {name: beta2 * self.squares[name] + (1 - beta2) * g * g for name, g in gradients.items()}
        directions = {name: (moments[name] / (1 - beta1**step)) / (
            (squares[name] / (1 - beta2**step)).sqrt() + ADAM_EPSILON) for name in gradients}
        return directions, AdamState(moments, squares, step)


@register
class Reptile(Learner):
    """Reptile with an inner Adam or SGD and a linearly annealed outer step."""

    name = "reptile"
    task_kinds = frozenset({EPISODIC})
    Options = ReptileOptions
    resumes_mid_task = True  # all its state is in state_dict
    distributed = True  # with a fresh inner state: episodes sharded, adapted weights summed

    @classmethod
    def single_process_reason(cls, options: ReptileOptions) -> str | None:
        if carries_state(options):
            return ("with inner_state: carried each episode starts from the inner Adam state the "
                    "one before it left, so the episodes of a meta-batch cannot be shared out; "
                    "set learner.options.inner_state: fresh, or run one process")
        return None

    def __init__(self, model: nn.Module, options: ReptileOptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        self.functional = FunctionalModel(self.model, options.batching)
        self.generator = INNER_BATCHES.generator(context.seed)
        self.iteration = 0
        self.inner_state = AdamState.zeros(self.functional.parameters())  # carried between episodes

    def meta_step_size(self) -> float:
        """epsilon, from ``meta_step`` at iteration 0 linearly to ``meta_step_final``."""
        done = min(self.iteration / self.options.anneal_steps, 1.0)
        return self.options.meta_step + done * (self.options.meta_step_final - self.options.meta_step)

    def adapt(self, params: Parameters, x: torch.Tensor, y: torch.Tensor, batches: torch.Tensor,
              state: AdamState | None = None) -> tuple[Parameters, torch.Tensor, AdamState]:
        """One episode's inner loop over the minibatches ``x[batches[t]]``, the inner Adam
        starting from ``state`` (zero if None); (adapted parameters, the loss of the last
        minibatch, the Adam state after it)."""
        state = state or AdamState.zeros(params)
        for t in range(batches.shape[0]):
            gradients, loss = self.functional.gradient(params, x[batches[t]], y[batches[t]])
            if self.options.inner_optimizer == "adam":
                gradients, state = state.directions(gradients, self.options.betas)
            params = {name: p - self.options.inner_lr * gradients[name] for name, p in params.items()}
        return params, loss, state

    @property
    def carries_state(self) -> bool:
        return carries_state(self.options)

    def training_examples(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Each episode's first ``train_shots`` examples per class, support then queries:
        [B, N*S, C, H, W] and labels [B, N*S]."""
        n_way = int(batch.support_y.max()) + 1
        per_class = [t.view(len(batch), n_way, -1, *t.shape[2:]) for t in (batch.support_x, batch.query_x)]
        x = torch.cat(per_class, dim=2)
        shots = self.options.train_shots or x.shape[2]
        if shots > x.shape[2]:
            raise ValueError(f"train_shots={shots} but training episodes hold {x.shape[2]} examples "
                             "per class (protocol k_shot + q_query); raise q_query or lower train_shots")
        y = torch.arange(n_way, device=x.device).repeat_interleave(shots).expand(len(batch), -1)
        return x[:, :, :shots].flatten(1, 2), y

    @torch.no_grad()  # torch.func.grad still differentiates the inner loss
    def train_step(self, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        self.model.train()
        x, y = self.training_examples(batch)
        batches = minibatch_indices(len(batch), x.shape[1], self.options.inner_steps,
                                    self.options.inner_batch_size, self.generator).to(x.device)
        params = self.functional.parameters()
        if self.carries_state:  # one episode after another, each from the state the last left
            adapted, losses = {name: torch.zeros_like(p) for name, p in params.items()}, []
            for episode in zip(x, y, batches):
                phi, loss, self.inner_state = self.adapt(params, *episode, self.inner_state)
                for name in adapted:
                    adapted[name] += phi[name] / len(batch)
                losses.append(loss)
            losses = torch.stack(losses)
        else:  # this process's shard of the episodes; the mean over all processes' episodes
            mine = shard(len(batch))
            adapted, losses = self.functional.map_episodes(
                lambda *episode: self.adapt(params, *episode)[:2], x[mine], y[mine], batches[mine])
            *sums, loss = sum_in_order([*(phis.sum(0) for phis in adapted.values()), losses.sum()])
            adapted = {name: total / len(batch) for name, total in zip(adapted, sums)}
            losses = loss / len(batch)
        epsilon = self.meta_step_size()
        for name, p in params.items():  # the step's direction as a gradient, which a composed
            p.grad = p - adapted[name]  # regulariser may add to (take_step)
        values = self.take_step(lambda: torch._foreach_add_(
            list(params.values()), [p.grad for p in params.values()], alpha=-epsilon))
        self.iteration += 1
        return {"loss": losses.mean(), "meta_step": torch.tensor(epsilon), **values}

    @torch.no_grad()
    def predict_episodes(self, batch: EpisodeBatch) -> torch.Tensor:
        """``eval_inner_steps`` inner steps on each support set, then the query logits."""
        self.model.eval()
        generator = EVAL_INNER_BATCHES.generator(self.context.seed)
        batches = minibatch_indices(len(batch), batch.support_x.shape[1], self.options.eval_inner_steps,
                                    self.options.eval_inner_batch_size, generator)
        params = self.functional.parameters()
        state = self.inner_state if self.carries_state else None

        def adapt(x: torch.Tensor, y: torch.Tensor, episode_batches: torch.Tensor) -> Parameters:
            return self.adapt(params, x, y, episode_batches, state)[0]

        return self.functional.adapted_query_logits(
            adapt, batch.support_x, batch.query_x,
            (batch.support_x, batch.support_y, batches.to(batch.support_x.device)),
            self.options.transductive)

    def state_dict(self) -> dict[str, Any]:
        inner = self.inner_state
        return {**super().state_dict(), "iteration": self.iteration,
                "generator": self.generator.get_state(),
                "inner_state": {"moments": inner.moments, "squares": inner.squares, "step": inner.step}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.iteration = state["iteration"]
        self.generator.set_state(state["generator"])
        self.inner_state = AdamState(**state["inner_state"])
