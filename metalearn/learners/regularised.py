"""A continual regulariser composed with any learner that steps through ``take_step``.

``regularised`` wraps another learner (MAML, FOMAML, Meta-SGD, Reptile, ProtoNet...) and adds
the selective-plasticity penalty of ``metalearn.learners.plasticity`` to the parameters it
learns (a meta-learned initialisation, an embedding), with no class per pair. The wrapped
learner trains, predicts and keeps its state as alone; through its ``step_hook`` the wrapper
adds the penalty's gradient to each step's gradients (Reptile's: its step towards the adapted
weights) before the update, and after each task estimates how much each parameter mattered:

- ``ewc`` (Kirkpatrick et al. 2017): the mean over ``fisher_episodes`` episodes of the task's
  training classes of each episode's squared meta-gradient (the empirical Fisher of the
  meta-loss: an episode's query loss after adaptation plays the part of an example's
  log-likelihood), one penalty term per task, ``strength / 2 * sum_t F_t (theta - theta_t)^2``;
  it needs a learner with ``meta_gradient`` (MAML's family, ProtoNet);
- ``si`` (Zenke et al. 2017): the path integral of each step's gradient times its update,
  ``-sum g * delta theta`` (g penalty included), over the task, divided by the squared change
  plus ``damping``; ``strength * sum Omega (theta - theta*)^2`` anchored at the latest task.

The EWC episodes have the shape of the wrapped learner's training episodes (ProtoNet's own
60-way ones included), drawn from the task's training classes by the stream
``regularised.fisher_episodes``. The path integral restarts with each task and is not saved,
so checkpoints fall between tasks (``resumes_mid_task`` is False).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Literal

import pydantic
import torch
from torch import nn

from metalearn.learners.base import EPISODIC, Learner, LearnerContext, LearnerOptions, Phase
from metalearn.learners.plasticity import QuadraticPenalty
from metalearn.learners.registry import get_learner, register
from metalearn.seeding import derive_seed
from metalearn.tasks import EpisodeBatch, EpisodeSampler


class RegularisedOptions(LearnerOptions):
    learner: str = "maml"  # the wrapped learner's name
    options: dict[str, Any] = {}  # its options
    regulariser: Literal["ewc", "si"] = "ewc"
    strength: float = pydantic.Field(1.0, ge=0.0)  # lambda (EWC) or c (SI)
    fisher_episodes: int = pydantic.Field(100, ge=1)  # EWC: episodes the Fisher averages over
    damping: float = pydantic.Field(0.1, gt=0.0)  # SI's xi

    @pydantic.model_validator(mode="after")
    def _wrapped_learner_fits(self) -> RegularisedOptions:
        wrapped = get_learner(self.learner)
        if EPISODIC not in wrapped.task_kinds:
            raise ValueError(f"learner {self.learner!r} does not meta-learn on episodes: wrap a "
                             "meta-learner (maml, reptile, protonet, ...)")
        if self.regulariser == "ewc" and not hasattr(wrapped, "meta_gradient"):
            raise ValueError(f"regulariser ewc estimates the Fisher from per-episode "
                             f"meta-gradients, which {self.learner!r} does not compute: use "
                             "regulariser si, or a learner of MAML's family or protonet")
        self.options = wrapped.Options.model_validate(self.options).model_dump()
        return self


def episode_shape(batch: EpisodeBatch) -> tuple[int, int, int]:
    """(ways, shots, queries per class) of a meta-batch's episodes."""
    n_way = int(batch.support_y.max()) + 1
    return n_way, batch.support_y.shape[1] // n_way, batch.query_y.shape[1] // n_way


@register
class Regularised(Learner):
    """Another learner with EWC's or SI's quadratic penalty on the parameters it learns."""

    name = "regularised"
    task_kinds = frozenset({EPISODIC})
    Options = RegularisedOptions

    def __init__(self, model: nn.Module, options: RegularisedOptions, context: LearnerContext) -> None:
        super().__init__(model, options, context)
        wrapped = get_learner(options.learner)
        self.inner = wrapped(model, wrapped.Options.model_validate(options.options), context)
        self.inner.step_hook = self._regularised_update
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.penalty = QuadraticPenalty(self.parameters)
        self.shape: tuple[int, int, int] | None = None  # of the training episodes
        self.hooked = False

    @property
    def penalty_scale(self) -> float:
        return self.options.strength / 2 if self.options.regulariser == "ewc" else self.options.strength

    def begin_task(self, task_index: int) -> None:
        self.inner.begin_task(task_index)
        self.path_integral = [torch.zeros_like(p) for p in self.parameters]

    def phases(self, task_index: int, steps: int) -> list[Phase]:
        return self.inner.phases(task_index, steps)

    def begin_phase(self, task_index: int, phase: str) -> None:
        self.inner.begin_phase(task_index, phase)

    def training_batches(self, task_index: int, phase: str = "train") -> Iterator[Any] | None:
        return self.inner.training_batches(task_index, phase)

    def train_step(self, batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        self.shape = episode_shape(batch)
        values = self.inner.train_step(batch)
        if not self.hooked:
            raise ValueError(f"learner {self.options.learner!r} takes its steps without "
                             "take_step, so no regulariser can be composed with it; see "
                             "docs/learners.md")
        return values

    def _regularised_update(self, update: Callable[[], Any]) -> dict[str, torch.Tensor]:
        """Add the penalty's gradient to the step's, update, and integrate SI's path."""
        self.hooked = True
        for p in self.parameters:  # unused by this step's loss, yet still pulled by the penalty
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        values = {}
        if self.penalty.terms:
            values["penalty"] = self.penalty.add_gradient_(self.penalty_scale)
        before = [p.detach().clone() for p in self.parameters]
        update()
        with torch.no_grad():
            moved = torch._foreach_sub([p.detach() for p in self.parameters], before)
            torch._foreach_addcmul_(self.path_integral, [p.grad for p in self.parameters], moved,
                                    value=-1.0)
        return values

    def end_task(self, task_index: int) -> None:
        self.inner.end_task(task_index)
        if self.options.regulariser == "ewc":
            self.penalty.add_term(self.fisher(task_index))
        else:
            with torch.no_grad():
                change = torch._foreach_sub([p.detach() for p in self.parameters], self.penalty.anchor)
                self.penalty.reanchor([w / (d.square() + self.options.damping)
                                       for w, d in zip(self.path_integral, change)])

    def fisher(self, task_index: int) -> list[torch.Tensor]:
        """The mean squared meta-gradient of single episodes of task ``task_index``'s training
        classes, shaped as the training episodes."""
        if self.shape is None:
            raise ValueError("EWC's Fisher takes the shape of the training episodes, but no "
                             "training step was taken: set protocol.steps_per_task above 0")
        sampler = EpisodeSampler(self.context.stream[task_index].train, *self.shape,
                                 derive_seed(self.context.seed, "regularised.fisher_episodes",
                                             task_index),
                                 name=f"the training classes of task {task_index}")
        fisher = [torch.zeros_like(p) for p in self.parameters]
        self.model.train()  # as in training: the same batch statistics and dropout
        for _ in range(self.options.fisher_episodes):
            for p in self.parameters:
                p.grad = None
            self.inner.meta_gradient(sampler.sample(1))
            gradients = [p.grad if p.grad is not None else torch.zeros_like(p)
                         for p in self.parameters]
            torch._foreach_addcmul_(fisher, gradients, gradients,
                                    value=1 / self.options.fisher_episodes)
        for p in self.parameters:
            p.grad = None
        return fisher

    def predict_episodes(self, batch: EpisodeBatch) -> torch.Tensor:
        return self.inner.predict_episodes(batch)

    def model_size_bits(self) -> int:
        return self.inner.model_size_bits()

    def report(self, task_index: int) -> dict[str, float | torch.Tensor]:
        return self.inner.report(task_index)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "penalty": self.penalty.state_dict(),
                "shape": list(self.shape or ())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.penalty.load_state_dict(state["penalty"])
        self.shape = tuple(state["shape"]) or None
