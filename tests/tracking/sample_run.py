"""A hand-built 3-task run, and a driver that plays the protocol's calls to a tracker.

Training runs 20 steps per task and validation every 10 global steps, with the accuracies of
:func:`validation` on every task, which the hand-built results hold as their curves.
"""

from __future__ import annotations

from pathlib import Path

from metalearn.results import RunResults
from metalearn.tracking import Tracker

CONFIG = {"benchmark": {"name": "split_mnist", "options": {}}, "learner": {"name": "finetune"},
          "scenario": "class", "seed": 3}
ENVIRONMENT = {"torch": "2.x", "device": "cpu"}


def validation(global_step: int) -> dict[str, float]:
    """Validation accuracies at ``global_step``: 0/1 at 0.5 + step / 200, each next task 0.1
    lower."""
    return {name: round(0.5 + global_step / 200 - 0.1 * j, 4)
            for j, name in enumerate(["0/1", "2/3", "4/5"])}


def _validate(results: RunResults, steps: range) -> None:
    for global_step in steps:
        for name, accuracy in validation(global_step).items():
            results.validation_curves.setdefault(name, []).append((global_step, accuracy))


def partial_results() -> RunResults:
    """Two of three tasks done: row 2 of R is still NaN."""
    results = RunResults.empty("split_mnist", "finetune", "class", 3, ["0/1", "2/3", "4/5"],
                               [100, 200, 300], episodic=False)
    results.initial_accuracy[:] = [0.5, 0.4, 0.3]
    results.accuracy[0] = [0.99, 0.1, 0.2]
    results.accuracy[1] = [0.6, 0.98, 0.25]
    results.completed_tasks = 2
    results.curves["loss"] = [(10, 1.5), (20, 0.7), (30, 0.4), (40, 0.3)]
    results.curves["grad_norm"] = [(10, 3.0), (20, 2.0), (30, 2.5), (40, 1.0)]
    results.task_values["capacity_used"] = [0.5, 0.75, float("nan")]
    _validate(results, range(10, 41, 10))
    results.task_end_steps = [20, 40]
    results.selection = [{"rule": "best_validation", "step": 20, "validation_accuracy": 0.6},
                         {"rule": "best_validation", "step": 30, "validation_accuracy": 0.55}]
    return results


def complete(results: RunResults) -> RunResults:
    """The same run after its third task, with its metrics."""
    results.accuracy[2] = [0.5, 0.7, 0.97]
    results.completed_tasks = 3
    results.curves["loss"] += [(50, 0.9), (60, 0.2)]
    results.task_values["capacity_used"][2] = 0.875
    _validate(results, range(50, 61, 10))
    results.task_end_steps.append(60)
    results.selection.append({"rule": "best_validation", "step": 60, "validation_accuracy": 0.6})
    results.metrics = {"acc": 0.7233, "bwt": -0.385, "forgetting": 0.42}
    return results


def drive(tracker: Tracker, run_dir: Path, close: bool = True) -> RunResults:
    """Call ``tracker`` as the protocol does for 3 tasks of 20 training steps each."""
    results = partial_results()
    tracker.start(run_dir, CONFIG, ENVIRONMENT, total_steps=60)
    tracker.log_task(-1, results)
    for task in range(3):
        for step in range(20):
            global_step = 20 * task + step + 1
            tracker.log_train(task, step, global_step, {"loss": 1.0 / global_step, "lr": 0.1})
            if global_step % 10 == 0:
                tracker.log_validation(task, global_step, validation(global_step))
        if task == 2:  # rows 0 and 1 are in the hand-built results already
            complete(results)
        tracker.log_task(task, results)
    tracker.finish(results)
    if close:
        tracker.close()
    return results
