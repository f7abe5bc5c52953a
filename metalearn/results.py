"""The plain record of a run that the protocol fills in and tracking reports (no torch needed)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class RunResults:
    """Everything a run measured, as plain arrays and numbers.

    ``accuracy[i, j]`` is R[i, j], the accuracy on task j after training on tasks 0..i (NaN
    until measured); ``initial_accuracy[j]`` is b[j], before any training. For episodic tasks
    ``interval[i, j]`` is the half-width of the 95% confidence interval of R[i, j].
    ``curves`` maps a training quantity to (global step, value) points; ``task_values`` maps
    a quantity a learner reports after each task (e.g. PackNet's capacity used) to its value
    per task (NaN until reported).

    ``validation_curves`` maps a task's name to (global step, accuracy on its validation data)
    points; ``task_end_steps[i]`` is the global step at which training on task i ended;
    ``selection[i]`` says which state of task i was tested (``{"rule": "last" |
    "best_validation", "step": global step, "validation_accuracy": float | None}``).
    """

    benchmark: str
    learner: str
    scenario: str | None
    seed: int
    task_names: list[str]
    test_sizes: list[int]
    accuracy: np.ndarray
    initial_accuracy: np.ndarray
    interval: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    task_values: dict[str, list[float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    completed_tasks: int = 0
    validation_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    task_end_steps: list[int] = field(default_factory=list)
    selection: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def empty(cls, benchmark: str, learner: str, scenario: str | None, seed: int,
              task_names: list[str], test_sizes: list[int], episodic: bool) -> RunResults:
        n = len(task_names)
        return cls(
            benchmark, learner, scenario, seed, list(task_names), list(test_sizes),
            accuracy=np.full((n, n), np.nan), initial_accuracy=np.full(n, np.nan),
            interval=np.full((n, n), np.nan) if episodic else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays become nested lists, NaN becomes None."""
        def plain(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return plain(value.tolist())
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, float) and math.isnan(value):
                return None
            return value

        return plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResults:
        def array(value: Any) -> np.ndarray | None:
            return None if value is None else np.array(value, dtype=float)  # None -> NaN

        values = dict(data)
        for key in ("accuracy", "initial_accuracy", "interval"):
            values[key] = array(values.get(key))
        for curves in ("curves", "validation_curves"):
            values[curves] = {k: [tuple(p) for p in v] for k, v in values.get(curves, {}).items()}
        values["metrics"] = {k: math.nan if v is None else v for k, v in values.get("metrics", {}).items()}
        values["task_values"] = {k: [math.nan if x is None else x for x in v]
                                 for k, v in values.get("task_values", {}).items()}
        return cls(**values)
