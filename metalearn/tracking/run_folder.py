"""The run folder: config.yaml, environment.json, results.json, the figures that fit the run
(:func:`metalearn.tracking.plots.run_figures`), and the images a learner showed after each
task (``images/<name>_task_<i>.png``). docs/outputs.md describes each file.

results.json is rewritten after every task through a temporary file, so a run killed at any
moment leaves the results of its completed tasks, never a half-written file. With validation on,
``validation.jsonl`` gets one line per validation point as the run makes it, so a process that
watches the run (a sweep's early stopping) sees its learning curve while it trains. A run claims its
folder exclusively (:func:`claim_run_dir`), so two runs never write into one; a resumed run
keeps the environment it started in and adds its own under ``resumes``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from metalearn.files import atomic_write_text
from metalearn.results import RunResults
from metalearn.tracking.base import Tracker, seen_tasks_mean
from metalearn.tracking.plots import save_image_grid, save_run_figures

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
ENVIRONMENT_FILE = "environment.json"
VALIDATION_FILE = "validation.jsonl"


def claim_run_dir(run_dir: Path, numbered: bool = False) -> Path:
    """Create ``run_dir`` (or take it if it holds no run yet) for one run only, by creating its
    config file exclusively: two processes never get the same folder, whatever the timing.

    If the folder already holds a run, ``numbered`` tries ``run_dir-2``, ``run_dir-3``, ...;
    otherwise it raises FileExistsError. Errors of the file system (a read-only path) pass on.
    """
    others = (run_dir.with_name(f"{run_dir.name}-{n}") for n in itertools.count(2))
    for candidate in itertools.chain([run_dir], others if numbered else []):
        candidate.mkdir(parents=True, exist_ok=True)
        try:
            (candidate / CONFIG_FILE).open("x").close()
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{run_dir} already holds a run")


class RunFolder(Tracker):
    """Writes everything a reader needs to inspect a run without rerunning it."""

    def __init__(self) -> None:
        self.run_dir: Path | None = None

    def start(self, run_dir: Path, config: dict[str, Any], environment: dict[str, Any],
              total_steps: int) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
        path = self.run_dir / ENVIRONMENT_FILE
        if path.is_file():  # a resumed run: the first start's command and time stay
            started = json.loads(path.read_text())
            environment = {**started, "resumes": [*started.get("resumes", []), environment]}
        atomic_write_text(path, _json(environment))

    def log_validation(self, task_index: int, global_step: int,
                       accuracies: dict[str, float]) -> None:
        """Append the point: its task and step, the score ``select: best_validation`` ranks
        states by (the mean over the tasks seen), each task's accuracy. A resumed run appends
        the points it scores again after its checkpoint (same steps, same values)."""
        if self.run_dir is None:
            raise RuntimeError("RunFolder.start must be called before validation is logged")
        point = {"task": task_index, "step": global_step,
                 "score": seen_tasks_mean(task_index, accuracies), "accuracies": accuracies}
        with (self.run_dir / VALIDATION_FILE).open("a") as handle:
            handle.write(json.dumps(point) + "\n")

    def log_task(self, task_index: int, results: RunResults) -> None:
        self._write_results(results)

    def log_images(self, task_index: int, images: dict[str, np.ndarray]) -> None:
        if self.run_dir is None:
            raise RuntimeError("RunFolder.start must be called before images are logged")
        folder = self.run_dir / "images"
        folder.mkdir(exist_ok=True)
        for name, batch in images.items():
            save_image_grid(batch, folder / f"{name}_task_{task_index}.png",
                            f"{name} after task {task_index}")

    def finish(self, results: RunResults) -> None:
        if self.run_dir is None:  # the run failed before it started
            return
        self._write_results(results)
        save_run_figures(results, self.run_dir)

    def _write_results(self, results: RunResults) -> None:
        if self.run_dir is None:
            raise RuntimeError("RunFolder.start must be called before results are logged")
        atomic_write_text(self.run_dir / RESULTS_FILE, _json(results.to_dict()))


def load_results(run_dir: str | Path) -> RunResults:
    """The results a run folder holds, complete or partial (NaN where nothing was measured)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run folder of a run "
                                "that evaluated at least once?")
    return RunResults.from_dict(json.loads(path.read_text()))


def load_validation_points(run_dir: str | Path) -> list[dict[str, Any]]:
    """The validation points ``validation.jsonl`` holds so far, in the order written (none if
    the run has not validated yet); a last line still being written is left for the next read."""
    path = Path(run_dir) / VALIDATION_FILE
    if not path.is_file():
        return []
    points = []
    for line in path.read_text().splitlines():
        try:
            points.append(json.loads(line))
        except json.JSONDecodeError:  # only the line being appended can be incomplete
            break
    return points


def _json(value: Any) -> str:
    def plain(item: Any) -> Any:  # numpy scalars and paths that slipped into a dict
        return item.item() if isinstance(item, np.generic) else str(item)

    return json.dumps(value, indent=2, default=plain) + "\n"
