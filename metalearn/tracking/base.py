"""The hook points a run reports through: start, each training step, each task, the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from metalearn.results import RunResults


class Tracker:
    """Receives a run's events; every method is a no-op unless a subclass overrides it."""

    def start(self, run_dir: Path, config: dict[str, Any], environment: dict[str, Any],
              total_steps: int) -> None:
        """Before training; ``total_steps`` counts the training steps still to come."""

    def log_train(self, task_index: int, step: int, global_step: int, values: dict[str, float]) -> None:
        """After one training step."""

    def log_task(self, task_index: int, results: RunResults) -> None:
        """After task ``task_index`` was trained and every task evaluated (-1: the initial b)."""

    def finish(self, results: RunResults) -> None:
        """At the end of a run, also one that stopped early (then ``results`` is partial)."""

    def close(self) -> None:
        """Always called last, even after an error."""


class Trackers(Tracker):
    """Several trackers, called in order."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def start(self, run_dir, config, environment, total_steps):  # type: ignore[no-untyped-def]
        for tracker in self.trackers:
            tracker.start(run_dir, config, environment, total_steps)

    def log_train(self, task_index, step, global_step, values):  # type: ignore[no-untyped-def]
        for tracker in self.trackers:
            tracker.log_train(task_index, step, global_step, values)

    def log_task(self, task_index, results):  # type: ignore[no-untyped-def]
        for tracker in self.trackers:
            tracker.log_task(task_index, results)

    def finish(self, results):  # type: ignore[no-untyped-def]
        for tracker in self.trackers:
            tracker.finish(results)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
