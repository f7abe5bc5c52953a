"""The hook points a run reports through: start, each training step, each task, the end.

The protocol calls one :class:`Tracker`; :class:`Trackers` fans its calls out to several, so the
console, the run folder and wandb stay independent of each other and of the loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from metalearn.results import RunResults


def seen_tasks_mean(task_index: int, accuracies: dict[str, float]) -> float:
    """Mean validation accuracy over the tasks seen while training on task ``task_index`` (the
    first ``task_index + 1`` of ``accuracies``, in stream order): the score that
    ``select: best_validation`` ranks states by."""
    return float(np.mean(list(accuracies.values())[: task_index + 1]))


class Tracker:
    """Receives a run's events; every method is a no-op unless a subclass overrides it."""

    def start(self, run_dir: Path, config: dict[str, Any], environment: dict[str, Any],
              total_steps: int) -> None:
        """Before training; ``total_steps`` counts every training step of the run."""

    def log_train(self, task_index: int, step: int, global_step: int,
                  values: dict[str, float]) -> None:
        """After one training step (``step`` within the task, ``global_step`` within the run)."""

    def log_validation(self, task_index: int, global_step: int,
                       accuracies: dict[str, float]) -> None:
        """After scoring the validation data of every task (name -> accuracy) at
        ``global_step``, while training on task ``task_index``."""

    def log_task(self, task_index: int, results: RunResults) -> None:
        """After task ``task_index`` was trained and every task evaluated (-1: the initial b)."""

    def log_images(self, task_index: int, images: dict[str, np.ndarray]) -> None:
        """Images a learner showed after task ``task_index``: name -> [n, C, H, W] in [0, 1]."""

    def finish(self, results: RunResults) -> None:
        """At the end of a run, also one that stopped early (then ``results`` is partial)."""

    def close(self) -> None:
        """Always called last, even after an error: release what ``start`` acquired."""


class Trackers(Tracker):
    """Several trackers, called in the order given."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def start(self, run_dir: Path, config: dict[str, Any], environment: dict[str, Any],
              total_steps: int) -> None:
        for tracker in self.trackers:
            tracker.start(run_dir, config, environment, total_steps)

    def log_train(self, task_index: int, step: int, global_step: int,
                  values: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log_train(task_index, step, global_step, values)

    def log_validation(self, task_index: int, global_step: int,
                       accuracies: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log_validation(task_index, global_step, accuracies)

    def log_task(self, task_index: int, results: RunResults) -> None:
        for tracker in self.trackers:
            tracker.log_task(task_index, results)

    def log_images(self, task_index: int, images: dict[str, np.ndarray]) -> None:
        for tracker in self.trackers:
            tracker.log_images(task_index, images)

    def finish(self, results: RunResults) -> None:
        for tracker in self.trackers:
            tracker.finish(results)

    def close(self) -> None:
        """Close every tracker even if one fails; then raise the first failure."""
        errors: list[BaseException] = []
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as error:  # re-raised below, after the others were closed
                errors.append(error)
        if errors:
            raise errors[0]
