"""The terminal: a progress bar while training, a line per validation and per task, a results
table at the end and, last, where the run folder is.

When the console is not a terminal (CI logs, files), rich draws no live bar; the reporter then
prints a plain line every tenth of the run instead, so a log shows progress without flooding.
All values are shown in % with two decimals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from metalearn.results import RunResults
from metalearn.tracking.base import Tracker, seen_tasks_mean

PLAIN_REPORTS = 10  # progress lines per run when there is no live bar


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _mean(values: np.ndarray) -> float:
    """Mean of the measured (finite) values; NaN, without a warning, if there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _title(results: RunResults) -> str:
    scenario = f", {results.scenario}-incremental" if results.scenario else ""
    return f"{results.learner} on {results.benchmark}{scenario}, seed {results.seed}"


def results_table(results: RunResults) -> Table:
    """Per task: accuracy before training (b) and after the last completed task; then metrics."""
    T, last = len(results.task_names), results.completed_tasks - 1
    title = _title(results)
    if results.completed_tasks < T:
        title += f" (stopped after {results.completed_tasks} of {T} tasks)"
    table = Table(title=title, caption="accuracies and metrics in %")
    table.add_column("task")
    table.add_column("before training", justify="right")
    table.add_column(f"after task {last}" if last >= 0 else "after training", justify="right")
    for j, name in enumerate(results.task_names):
        final = "-"
        if last >= 0:
            final = _percent(results.accuracy[last, j])
            if results.interval is not None and not math.isnan(results.interval[last, j]):
                final += f" ± {_percent(results.interval[last, j])}"
        table.add_row(name, _percent(results.initial_accuracy[j]), final)
    if results.metrics:
        table.add_section()
        for metric, value in results.metrics.items():
            table.add_row(metric, "", _percent(value))
    return table


def comparison_table(runs: Sequence[RunResults]) -> Table:
    """One row per run, one column per metric (in order of first appearance)."""
    metrics = list(dict.fromkeys(metric for run in runs for metric in run.metrics))
    benchmarks = sorted({run.benchmark for run in runs})
    table = Table(title=f"{', '.join(benchmarks)}: metrics in %")
    for column in ("learner", "scenario", "seed", "tasks"):
        table.add_column(column)
    for metric in metrics:
        table.add_column(metric, justify="right")
    for run in runs:
        table.add_row(run.learner, run.scenario or "-", str(run.seed),
                      f"{run.completed_tasks}/{len(run.task_names)}",
                      *(_percent(run.metrics.get(metric)) for metric in metrics))
    return table


class ConsoleReporter(Tracker):
    """A progress bar over all training steps, a line per task and the results table."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress: Progress | None = None
        self._bar = TaskID(0)
        self._total = 0
        self._task_names: list[str] = []
        self._run_dir: Path | None = None
        self._resumed_at: int | None = None  # first global step this session trains
        self._next_report = 0

    def start(self, run_dir: Path, config: dict[str, Any], environment: dict[str, Any],
              total_steps: int) -> None:
        self._run_dir = Path(run_dir)
        self.console.print(f"run folder: {run_dir}", soft_wrap=True)
        self._total = total_steps
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
        )
        self._bar = self.progress.add_task("training", total=total_steps)
        self.progress.start()

    def log_train(self, task_index: int, step: int, global_step: int,
                  values: dict[str, float]) -> None:
        if self.progress is None:
            return
        if self._resumed_at is None:  # a resumed run starts mid-way: keep the speed estimate honest
            self._resumed_at = global_step - 1
            self.progress.reset(self._bar, completed=self._resumed_at)
            self._next_report = global_step
        description = self._describe(task_index, values)
        self.progress.update(self._bar, completed=global_step, description=description)
        if not self.console.is_terminal and global_step >= self._next_report:
            self._next_report += max(1, self._total // PLAIN_REPORTS)
            self.console.print(f"step {global_step}/{self._total}: {description}")

    def log_validation(self, task_index: int, global_step: int,
                       accuracies: dict[str, float]) -> None:
        line = f"validation at step {global_step}: " + ", ".join(
            f"{name} {_percent(value)}%" for name, value in accuracies.items())
        if len(accuracies) > 1:
            line += f"; mean over seen tasks {_percent(seen_tasks_mean(task_index, accuracies))}%"
        self.console.print(line, soft_wrap=True)  # one line, also in a narrow log

    def log_task(self, task_index: int, results: RunResults) -> None:
        self._task_names = results.task_names
        T = len(results.task_names)
        if task_index < 0:
            mean = _mean(results.initial_accuracy)
            self.console.print(f"before training: mean accuracy {_percent(mean)}% over {T} tasks")
            return
        row = results.accuracy[task_index]
        seen = _mean(row[: task_index + 1])
        self.console.print(
            f"after task {task_index} ({results.task_names[task_index]}), {task_index + 1} of {T}: "
            f"mean accuracy {_percent(seen)}% on seen tasks, {_percent(_mean(row))}% on all"
            + "".join(f"; {name} {per_task[task_index]:.4g}"
                      for name, per_task in results.task_values.items())
        )

    def finish(self, results: RunResults) -> None:
        self.close()
        self.console.print(results_table(results))
        if self._run_dir is not None:
            self.console.print(f"results, figures and checkpoint in: {self._run_dir}",
                               soft_wrap=True)  # a path to copy, never broken

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _describe(self, task_index: int, values: dict[str, float]) -> str:
        text = f"task {task_index}"
        if task_index < len(self._task_names):
            text += f" ({self._task_names[task_index]})"
        if values:
            name = "loss" if "loss" in values else next(iter(values))
            text += f"  {name} {values[name]:.4f}"
        return text
