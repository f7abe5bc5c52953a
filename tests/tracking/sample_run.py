"""A hand-built 3-task run, and a driver that plays the protocol's calls to a tracker."""

from __future__ import annotations

from pathlib import Path

from metalearn.results import RunResults
from metalearn.tracking import Tracker

CONFIG = {"benchmark": {"name": "split_mnist", "options": {}}, "learner": {"name": "finetune"},
          "scenario": "class", "seed": 3}
ENVIRONMENT = {"torch": "2.x", "device": "cpu"}


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
    return results


def complete(results: RunResults) -> RunResults:
    """The same run after its third task, with its metrics."""
    results.accuracy[2] = [0.5, 0.7, 0.97]
    results.completed_tasks = 3
    results.curves["loss"] += [(50, 0.9), (60, 0.2)]
    results.task_values["capacity_used"][2] = 0.875
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
        if task == 2:  # rows 0 and 1 are in the hand-built results already
            complete(results)
        tracker.log_task(task, results)
    tracker.finish(results)
    if close:
        tracker.close()
    return results
