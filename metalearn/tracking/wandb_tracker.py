"""Weights & Biases: one run per learner, grouped by benchmark, so a project compares them.

Offline by default when no credentials are found (sync later with ``wandb sync``). Any wandb
failure becomes one warning and the tracker turns itself off: wandb never fails a run.
"""

from __future__ import annotations

import functools
import netrc
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from metalearn.results import RunResults
from metalearn.tracking.base import Tracker
from metalearn.tracking.plots import plot_accuracy_matrix

MODES = ("auto", "online", "offline", "disabled")


def has_credentials() -> bool:
    """True if wandb could log in without asking: an API key in the environment or ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown wandb mode {mode!r}; choose one of {list(MODES)}")
    if mode == "auto":
        return "online" if has_credentials() else "offline"
    return mode


def _guarded(method: Callable) -> Callable:
    """Run ``method`` only while wandb works; on any error warn once and switch off."""

    @functools.wraps(method)
    def wrapper(self: WandbTracker, *args: Any) -> None:
        if self.run is None:
            return
        try:
            method(self, *args)
        except Exception as error:  # noqa: BLE001 - wandb must never fail a run
            warnings.warn(f"wandb failed in {method.__name__} ({error!r}); the run continues "
                          "without wandb", stacklevel=2)
            self.run = None

    return wrapper


class WandbTracker(Tracker):
    """Logs config, training values (x axis: global_step), per-task evaluation (x axis: task),
    R as a table and a heatmap, and the summary metrics."""

    def __init__(self, mode: str = "auto", project: str = "metalearn", tags: Sequence[str] = ()) -> None:
        self.mode, self.project, self.tags = resolve_mode(mode), project, list(tags)
        self.run: Any = None

    def start(self, run_dir: Path, config: dict[str, Any], environment: dict[str, Any],
              total_steps: int) -> None:
        if self.mode == "disabled":
            return
        self.run_dir = run_dir
        try:
            import wandb

            benchmark, learner = config["benchmark"]["name"], config["learner"]["name"]
            scenario = f"-{config['scenario']}" if config.get("scenario") else ""
            self.run = wandb.init(
                project=self.project, group=benchmark, job_type=learner, tags=self.tags,
                name=f"{learner}{scenario}-seed{config.get('seed', 0)}",
                config={**config, "environment": environment}, dir=str(run_dir), mode=self.mode,
                settings=wandb.Settings(silent=True, console="off"),
            )
            self.run.define_metric("global_step")
            self.run.define_metric("train/*", step_metric="global_step")
            self.run.define_metric("task")
            self.run.define_metric("eval/*", step_metric="task")
        except Exception as error:  # noqa: BLE001 - wandb must never fail a run
            warnings.warn(f"wandb could not start ({error!r}); the run continues without wandb",
                          stacklevel=2)
            self.run = None

    @_guarded
    def log_train(self, task_index: int, step: int, global_step: int, values: dict[str, float]) -> None:
        self.run.log({**{f"train/{k}": v for k, v in values.items()}, "global_step": global_step})

    @_guarded
    def log_task(self, task_index: int, results: RunResults) -> None:
        row = results.initial_accuracy if task_index < 0 else results.accuracy[task_index]
        logged = {f"eval/acc_task_{j}": float(v) for j, v in enumerate(row)}
        if task_index >= 0:
            logged["eval/avg_acc_seen"] = float(row[: task_index + 1].mean())
        self.run.log({**logged, "task": task_index})

    @_guarded
    def finish(self, results: RunResults) -> None:
        import wandb

        table = wandb.Table(columns=["after_task", *results.task_names])
        for i in range(results.completed_tasks):
            table.add_data(results.task_names[i], *map(float, results.accuracy[i]))
        heatmap = self.run_dir / "accuracy_matrix.png"
        if not heatmap.exists():
            plot_accuracy_matrix(results, heatmap)
        self.run.log({"accuracy_matrix": table, "accuracy_heatmap": wandb.Image(str(heatmap))})
        self.run.summary.update({**results.metrics, "completed_tasks": results.completed_tasks})
        self.run.finish()
        self.run = None

    @_guarded
    def close(self) -> None:
        self.run.finish(exit_code=1)  # reached only if finish() never ran: the run failed
        self.run = None
