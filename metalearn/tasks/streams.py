"""Sequences of tasks for continual learning, and the three scenarios of van de Ven & Tolias.

A :class:`Stream` is an ordered tuple of tasks. A task is either a
:class:`ClassificationTask` (ordinary labelled train/test sets, e.g. Split MNIST) or an
:class:`EpisodicTask` (class pools to draw few-shot episodes from, e.g. a group of Omniglot
alphabets); a few-shot benchmark is a stream of one episodic task.

Scenarios (van de Ven & Tolias 2019, "Three scenarios for continual learning") decide what a
classification stream's labels mean. Task t owns the class-incremental labels
``offset_t .. offset_t + n_classes_t - 1`` (offsets follow the stream order):

- task-incremental: the task id is known; the model has an output per class of every task and
  predicts task t among its own outputs only (masked logits, equivalent to a head per task);
- domain-incremental: one head of ``max n_classes_t`` outputs shared by every task;
- class-incremental: one head over every class of every task.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Sequence, Union

import torch

from metalearn.tasks.pools import ClassPool, check_batch_size, shuffled_batches


class Scenario(str, enum.Enum):
    TASK = "task"
    DOMAIN = "domain"
    CLASS = "class"


PixelTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LabelledImages:
    """uint8 images [n, H, W] and task-local int64 labels [n], on the same device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ClassificationTask:
    """One task of a continual stream: labelled data, labels local to the task (0..n-1).

    ``transform`` (a pixel permutation, a rotation) is applied to each gathered batch, so
    tasks that differ only by a transform share one copy of the images. ``validation``, if
    any, is held out of the training set, to choose settings and states on instead of ``test``.
    """

    name: str
    n_classes: int
    train: LabelledImages
    test: LabelledImages
    transform: PixelTransform | None = None
    validation: LabelledImages | None = None

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [b, H, W] to the float [b, 1, H, W] input in [0, 1] of this task."""
        x = images.unsqueeze(1).float().div_(255)
        return self.transform(x) if self.transform is not None else x


@dataclass(frozen=True)
class EpisodicTask:
    """A few-shot task: class pools to sample training episodes and evaluation episodes from."""

    name: str
    train: ClassPool
    test: ClassPool
    validation: ClassPool | None = None


Task = Union[ClassificationTask, EpisodicTask]


@dataclass(frozen=True)
class Batch:
    """A classification minibatch in a scenario's terms.

    ``y`` indexes the model's outputs (see :meth:`Stream.targets`); ``allowed`` [b, outputs]
    marks the outputs each example is predicted over (:meth:`Stream.output_slice`);
    ``task_ids`` says which task each example came from.
    """

    x: torch.Tensor
    y: torch.Tensor
    allowed: torch.Tensor
    task_ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Stream:
    """An ordered sequence of tasks and the scenarios it can be run in."""

    name: str
    tasks: tuple[Task, ...]
    scenarios: frozenset[Scenario]
    _output_masks: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kinds = {type(t) for t in self.tasks}
        if len(kinds) != 1:
            raise ValueError(f"a stream holds tasks of one kind, got {sorted(k.__name__ for k in kinds)}")

    @property
    def episodic(self) -> bool:
        return isinstance(self.tasks[0], EpisodicTask)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> Task:
        return self.tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def reordered(self, order: Sequence[int]) -> Stream:
        """The same tasks in another order (a curriculum); class-IL labels follow the new order."""
        if sorted(order) != list(range(len(self))):
            raise ValueError(f"task order {list(order)} is not a permutation of 0..{len(self) - 1}")
        return Stream(self.name, tuple(self.tasks[i] for i in order), self.scenarios)

    def check_scenario(self, scenario: Scenario | str) -> Scenario:
        """The scenario as an enum, or a ValueError naming the ones this stream supports."""
        supported = sorted(s.value for s in self.scenarios)
        try:
            scenario = Scenario(scenario)
        except ValueError:
            raise ValueError(f"unknown scenario {scenario!r}; {self.name} supports {supported}") from None
        if scenario not in self.scenarios:
            raise ValueError(f"{self.name} does not support the {scenario.value}-incremental "
                             f"scenario; it supports {supported}")
        return scenario

    def _label_offsets(self) -> list[int]:
        sizes = [t.n_classes for t in self.tasks]  # type: ignore[union-attr]
        return [sum(sizes[:i]) for i in range(len(sizes))]

    def n_outputs(self, scenario: Scenario | str) -> int:
        """Width of the output layer a model needs for this stream in this scenario."""
        if self.check_scenario(scenario) is Scenario.DOMAIN:
            return max(t.n_classes for t in self.tasks)  # type: ignore[union-attr]
        return sum(t.n_classes for t in self.tasks)  # type: ignore[union-attr]

    def targets(self, scenario: Scenario | str, task_index: int, local: torch.Tensor) -> torch.Tensor:
        """Task-local labels of task ``task_index`` as indices into the scenario's outputs."""
        if self.check_scenario(scenario) is Scenario.DOMAIN:
            return local
        return local + self._label_offsets()[task_index]

    def output_slice(self, scenario: Scenario | str, task_index: int, seen: int | None = None) -> slice:
        """The outputs a prediction for task ``task_index`` is taken over.

        Task-IL: the task's own classes. Domain-IL: the shared head. Class-IL: every class of the
        first ``seen`` tasks (all tasks if ``seen`` is None), as in van de Ven & Tolias.
        """
        scenario = self.check_scenario(scenario)
        if scenario is Scenario.DOMAIN:
            return slice(0, self.n_outputs(scenario))
        offsets = self._label_offsets() + [self.n_outputs(scenario)]
        if scenario is Scenario.TASK:
            return slice(offsets[task_index], offsets[task_index + 1])
        return slice(0, offsets[len(self) if seen is None else seen])

    def train_batches(
        self,
        scenario: Scenario | str,
        task_indices: Sequence[int],
        batch_size: int,
        generator: torch.Generator,
        seen: int,
        setting: str = "batch_size",
    ) -> Iterator[Batch]:
        """Endless shuffled minibatches from the training sets of ``task_indices``.

        Examples of all the given tasks are mixed in proportion to their sizes, a fresh
        permutation each epoch (one task for ordinary training; several for joint training or
        replay). ``seen`` is the number of tasks seen so far (for class-IL's outputs). A
        ``batch_size`` (the config's ``setting``) below 1 or above the examples of these tasks
        raises a ValueError here, at the call.
        """
        tasks = [self.tasks[i] for i in task_indices]
        sizes = torch.tensor([len(t.train) for t in tasks])  # type: ignore[union-attr]
        ends = torch.cumsum(sizes, 0)
        starts = ends - sizes
        names = ", ".join(repr(t.name) for t in tasks)
        what = (f"the training set of task {names}" if len(tasks) == 1
                else f"the training sets of tasks {names} together") + f" of {self.name}"
        indices = shuffled_batches(int(ends[-1]), batch_size, generator, what, setting)

        def parts(index: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
            if len(tasks) == 1:
                return [(task_indices[0], index)]
            owner = torch.searchsorted(ends, index, right=True)
            local = index - starts[owner]  # position within its own task
            return [(task_indices[k], local[owner == k]) for k in owner.unique().tolist()]

        return (self._batch(scenario, parts(index), seen, "train") for index in indices)

    def ordered_batches(
        self, scenario: Scenario | str, task_index: int, batch_size: int, seen: int,
        split: Literal["train", "test", "validation"] = "test",
    ) -> Iterator[Batch]:
        """Task ``task_index``'s whole ``split`` ("test", "validation" or "train") in a fixed
        order; the last batch may be smaller. A ``batch_size`` below 1, or a split the task does
        not hold, raises a ValueError here, at the call."""
        task = self.tasks[task_index]
        check_batch_size(batch_size, f"the {split} set of task {task.name!r} of {self.name}")
        if getattr(task, split) is None:
            raise ValueError(f"task {task.name!r} of {self.name} holds no {split} set")
        size = len(getattr(task, split))

        def batch(start: int) -> Batch:
            index = torch.arange(start, min(start + batch_size, size))
            return self._batch(scenario, [(task_index, index)], seen, split)

        return map(batch, range(0, size, batch_size))

    def allowed_outputs(self, scenario: Scenario | str, task_ids: torch.Tensor, seen: int) -> torch.Tensor:
        """[b, outputs] bool: the outputs each example, from task ``task_ids[k]``, competes over.

        ``seen`` is the number of tasks trained so far (class-IL widens with it); a task's own
        outputs are always included. For replayed examples, pass the current ``seen``.
        """
        key = (self.check_scenario(scenario), seen, task_ids.device)
        if key not in self._output_masks:  # one small table per (scenario, seen), reused
            masks = torch.zeros(len(self), self.n_outputs(scenario), dtype=torch.bool)
            for t in range(len(self)):
                masks[t, self.output_slice(scenario, t, max(seen, t + 1))] = True
            self._output_masks[key] = masks.to(task_ids.device)
        return self._output_masks[key][task_ids]

    def _batch(self, scenario: Scenario | str, parts: list[tuple[int, torch.Tensor]], seen: int,
               split: str) -> Batch:
        """Gather (task, example indices) parts into one Batch."""
        xs, ys, ids = [], [], []
        for task_index, index in parts:
            task = self.tasks[task_index]
            data = getattr(task, split)
            index = index.to(data.labels.device)
            xs.append(task.inputs(data.images[index]))  # type: ignore[union-attr]
            ys.append(self.targets(scenario, task_index, data.labels[index]))
            ids.append(torch.full((len(index),), task_index, device=index.device))
        task_ids = torch.cat(ids)
        return Batch(torch.cat(xs), torch.cat(ys), self.allowed_outputs(scenario, task_ids, seen),
                     task_ids)
