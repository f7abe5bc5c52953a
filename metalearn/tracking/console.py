"""The terminal: a progress bar while training, a results table at the end (rich)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from metalearn.results import RunResults
from metalearn.tracking.base import Tracker


def _percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def results_table(results: RunResults) -> Table:
    """Per task: accuracy before training (b) and after the last completed task; then metrics."""
    scenario = f", {results.scenario}-IL" if results.scenario else ""
    table = Table(title=f"{results.learner} on {results.benchmark}{scenario}, seed {results.seed} (%)")
    table.add_column("task")
    table.add_column("before training", justify="right")
    table.add_column(f"after task {results.completed_tasks - 1}", justify="right")
    last = results.completed_tasks - 1
    for j, name in enumerate(results.task_names):
        final = _percent(results.accuracy[last, j]) if last >= 0 else "-"
        if results.interval is not None and last >= 0:
            final += f" ± {_percent(results.interval[last, j])}"
        table.add_row(name, _percent(results.initial_accuracy[j]), final)
    table.add_section()
    for metric, value in results.metrics.items():
        table.add_row(metric, "", _percent(value))
    return table


def comparison_table(runs: Sequence[RunResults]) -> Table:
    """One row per run, one column per metric, for comparing learners side by side."""
    metrics = list(dict.fromkeys(m for run in runs for m in run.metrics))
    table = Table(title="comparison (%)")
    for column in ("benchmark", "learner", "scenario", "seed"):
        table.add_column(column)
    for metric in metrics:
        table.add_column(metric, justify="right")
    for run in runs:
        table.add_row(run.benchmark, run.learner, run.scenario or "-", str(run.seed),
                      *(_percent(run.metrics.get(m)) for m in metrics))
    return table


class ConsoleReporter(Tracker):
    """A progress bar over all training steps, and the results table when the run ends."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress: Progress | None = None

    def start(self, run_dir: Path, config: dict[str, Any], environment: dict[str, Any],
              total_steps: int) -> None:
        self.console.print(f"run folder: {run_dir}")
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.bar = self.progress.add_task("training", total=total_steps)
        self.progress.start()

    def log_train(self, task_index: int, step: int, global_step: int, values: dict[str, float]) -> None:
        if self.progress is not None:
            loss = values.get("loss")
            text = f"task {task_index}" + (f"  loss {loss:.4f}" if loss is not None else "")
            self.progress.update(self.bar, advance=1, description=text)

    def finish(self, results: RunResults) -> None:
        self.close()
        self.console.print(results_table(results))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
