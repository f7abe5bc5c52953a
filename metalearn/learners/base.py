"""The learner contract shared by meta-learners and continual learners.

The training loop and the evaluation belong to the protocol; a learner says only what is
special about it. For each task of a stream the protocol calls ``begin_task``, then for each
of the task's ``phases`` ``begin_phase`` and ``train_step`` once per training step, then
``end_task``, and evaluates every task with
``predict`` (classification tasks: logits over the model's outputs) or ``predict_episodes``
(few-shot tasks: adapt on each episode's support set, return logits for its queries), then
asks it for a ``report`` of the task (numbers and images to keep with the run).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from metalearn.distributed import shard, sum_gradients, world_size
from metalearn.tasks import Batch, EpisodeBatch, EpisodicTask, Scenario, Stream

CLASSIFICATION = "classification"
EPISODIC = "episodic"


class LearnerOptions(pydantic.BaseModel):
    """Base of every learner's hyperparameters: unknown keys are an error."""

    model_config = pydantic.ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Phase:
    """A stretch of training on one task: ``steps`` calls of ``train_step`` after
    ``begin_phase(task_index, name)``. Values logged in a phase other than ``"train"`` are
    kept as curves named ``"<phase>/<value>"``."""

    name: str
    steps: int


@dataclass(frozen=True)
class LearnerContext:
    """What a learner is told about its run when it is built."""

    stream: Stream
    scenario: Scenario | None  # None for episodic streams
    device: torch.device
    seed: int


class Learner(abc.ABC):
    """One learning algorithm. Subclasses live in one file each and register by ``name``.

    Class attributes: ``name``; ``task_kinds``, the kinds of task it trains on
    (``"classification"``, ``"episodic"``); ``scenarios``, the continual scenarios it supports;
    ``Options``, a :class:`LearnerOptions` subclass of its hyperparameters with defaults;
    ``resumes_mid_task`` and ``distributed`` (below).
    """

    name: ClassVar[str]
    task_kinds: ClassVar[frozenset[str]]
    scenarios: ClassVar[frozenset[Scenario]] = frozenset(Scenario)
    Options: ClassVar[type[LearnerOptions]] = LearnerOptions
    # True if a learner restored from ``state_dict`` in the middle of a task may be given
    # ``begin_task`` again and train on: its state holds everything of the task so far. The
    # protocol then checkpoints inside tasks too (ProtocolSettings.checkpoint_every).
    resumes_mid_task: ClassVar[bool] = False
    # True if one run may go over several processes (torchrun; docs/distributed.md): the
    # learner takes its ``metalearn.distributed.shard`` of each batch and sums what it computes
    # across processes, so that every process takes the same step as one process would.
    distributed: ClassVar[bool] = False
    # Set by a learner that composes a regulariser with this one (``regularised``): called with
    # the update of each training step, once its gradients are in ``.grad``; it may add to them,
    # takes the update and returns values to log (see ``take_step``).
    step_hook: Callable[[Callable[[], Any]], dict[str, torch.Tensor]] | None = None

    @classmethod
    def single_process_reason(cls, options: LearnerOptions) -> str | None:
        """Why a learner that runs distributed must, with these options, run as one process
        (None: it need not)."""
        return None

    def __init__(self, model: nn.Module, options: LearnerOptions, context: LearnerContext) -> None:
        self.model = model.to(context.device)
        self.options = options
        self.context = context

    def begin_task(self, task_index: int) -> None:
        """Called before training on task ``task_index``."""

    def phases(self, task_index: int, steps: int) -> list[Phase]:
        """How training on task ``task_index`` is split; ``steps`` is the protocol's
        ``steps_per_task``. By default one phase, ``"train"``, of ``steps``. A learner with more
        training per task (PackNet's retraining after pruning) adds phases, so the protocol
        logs, checks, times and counts those steps like any others. Fixed by the options (the
        progress bar's total is summed from it before training)."""
        return [Phase("train", steps)]

    def begin_phase(self, task_index: int, phase: str) -> None:
        """Called before each phase of a task's training (after ``begin_task`` for the first)."""

    def training_batches(self, task_index: int, phase: str = "train") -> Iterator[Any] | None:
        """The batches ``train_step`` gets in this phase of the task, or None for the protocol's
        own (the task's minibatches or episodes, continued across phases).

        Override to train on other data than the current task's minibatches or episodes
        (joint training, pretraining on a pool's classes); draw randomness from
        ``metalearn.seeding.derive_generator(context.seed, "my_learner.batches", task_index)``.
        """
        return None

    @abc.abstractmethod
    def train_step(self, batch: Batch | EpisodeBatch) -> dict[str, torch.Tensor]:
        """One training step (a minibatch or a meta-batch); returns the values to log."""

    def take_step(self, update: Callable[[], Any]) -> dict[str, torch.Tensor]:
        """Take a training step's ``update`` (an optimizer's step) of the gradients in ``.grad``,
        through ``step_hook`` if a composed regulariser set one; the values it logs. A learner
        that calls this in ``train_step`` can be composed with a regulariser."""
        if self.step_hook is None:
            update()
            return {}
        return self.step_hook(update)

    def end_task(self, task_index: int) -> None:
        """Called after training on task ``task_index``, before it is evaluated."""

    def episodic_task(self, task_index: int) -> EpisodicTask:
        """Task ``task_index`` of the stream, which an episodic learner's tasks are."""
        task = self.context.stream[task_index]
        assert isinstance(task, EpisodicTask)
        return task

    def model_size_bits(self) -> int:
        """What the learner stores to predict, in bits: by default the model's parameters at
        their precision. Learners that keep more (masks, columns) count it (a mask entry is one
        bit); recorded after every task as the results' ``model_size_bits``."""
        return sum(p.numel() * p.element_size() * 8 for p in self.model.parameters())

    def report(self, task_index: int) -> dict[str, float | torch.Tensor]:
        """What the learner shows after task ``task_index`` was trained and evaluated.

        Numbers (e.g. PackNet's capacity used) are kept per task in the run's results; image
        batches [n, C, H, W] in [0, 1] (e.g. a generator's samples) are saved as a grid in the
        run folder and logged to wandb. Draw no randomness from the global generator here.
        """
        return {}

    def predict(self, x: torch.Tensor, task_index: int | None) -> torch.Tensor:
        """Logits [b, outputs] for classification inputs; ``task_index`` only in task-IL."""
        raise NotImplementedError(f"{self.name} does not predict classification tasks")

    def predict_episodes(self, batch: EpisodeBatch) -> torch.Tensor:
        """Adapt on each episode's support set; logits [B, N*Q, N] for its queries."""
        raise NotImplementedError(f"{self.name} does not solve few-shot episodes")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: tensors and plain values only, no pickled objects."""
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])


def adam(parameters: Iterable[torch.Tensor], lr: float,
         betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernel: on the CPU PyTorch otherwise steps one tensor at a
    time (0.85 ms against 0.30 ms for the 2x400 MLP, benchmarks/step_breakdown.py)."""
    return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=True)


def masked_cross_entropy(logits: torch.Tensor, batch: Batch, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over each example's allowed outputs only (the scenario's label space)."""
    return F.cross_entropy(logits.masked_fill(~batch.allowed, float("-inf")), batch.y,
                           reduction=reduction)


def batch_part(batch: Batch, part: slice) -> Batch:
    """The examples ``part`` of a minibatch."""
    return Batch(*(t[part] for t in (batch.x, batch.y, batch.allowed, batch.task_ids)))


def minibatch_gradient(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Backpropagate the minibatch's mean masked cross-entropy into ``.grad``; return it.

    Data-parallel over several processes: each takes its shard of the same minibatch and
    backpropagates its shard's summed loss divided by the whole minibatch's size, and the
    gradients and losses are summed in rank order, so every process holds the whole minibatch's
    mean gradient, as one process would. What every process adds after this (a penalty's
    gradient) is then counted once.
    """
    mine = batch_part(batch, shard(len(batch)))
    loss = masked_cross_entropy(model(mine.x), mine, reduction="sum") / len(batch)
    loss.backward()
    return sum_gradients(list(model.parameters()), loss.detach())


def check_data_parallel(model: nn.Module) -> None:
    """Refuse, over several processes, a model whose training output depends on the rest of its
    minibatch (batch normalisation) or on random draws (dropout): a shard of the minibatch
    would then not train as its part of the whole does on one process."""
    if world_size() == 1:
        return
    reasons = {nn.modules.batchnorm._BatchNorm: "normalises each example with the statistics "
               "of the rest of its minibatch", nn.modules.dropout._DropoutNd: "draws its random "
               "masks for the whole minibatch"}
    for name, module in model.named_modules():
        for kind, reason in reasons.items():
            if isinstance(module, kind):
                raise ValueError(
                    f"the model's {type(module).__name__} ({name}) {reason} in training, so a "
                    f"run over {world_size()} processes, each with a shard of the minibatch, "
                    "would not be the run of one process: run it as one process, or use a "
                    "model without it")


def check_compatible(learner: type[Learner], stream: Stream, scenario: Scenario | None) -> None:
    """Refuse, before any training, a learner that cannot run this stream or scenario."""
    kind = EPISODIC if stream.episodic else CLASSIFICATION
    if kind not in learner.task_kinds:
        raise ValueError(
            f"learner {learner.name!r} trains on {sorted(learner.task_kinds)} tasks, but "
            f"benchmark {stream.name!r} has {kind} tasks; pick a learner listed for {kind} "
            "tasks by `metalearn list`"
        )
    if scenario is not None and scenario not in learner.scenarios:
        supported = sorted(s.value for s in learner.scenarios)
        reason = (": it needs the task's identity at test to choose the weights that answer, "
                  "and only task-incremental runs give it"
                  if learner.scenarios == {Scenario.TASK} else "")
        raise ValueError(f"learner {learner.name!r} supports the scenarios {supported}, not "
                         f"{scenario.value!r}{reason}")


def check_distributed(learner: type[Learner], options: LearnerOptions, processes: int) -> None:
    """Refuse, before any training, a run over several processes of a learner that cannot
    run so, by its class or by its options."""
    if processes == 1:
        return
    if not learner.distributed:
        raise ValueError(
            f"learner {learner.name!r} cannot run over several processes yet ({processes} were "
            "started): run it as one process (metalearn run, without torchrun); "
            "docs/distributed.md lists the learners that can")
    reason = learner.single_process_reason(options)
    if reason is not None:
        raise ValueError(f"learner {learner.name!r} cannot run over several processes "
                         f"({processes} were started) with these options: {reason}")
