"""The run folder: config.yaml, environment.json, results.json and the figures."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from metalearn.results import RunResults
from metalearn.tracking.base import Tracker
from metalearn.tracking.plots import plot_accuracy_matrix, plot_learning_curves

RESULTS_FILE = "results.json"


class RunFolder(Tracker):
    """Writes everything a reader needs to inspect a run, results after every task."""

    run_dir: Path

    def start(self, run_dir: Path, config: dict[str, Any], environment: dict[str, Any],
              total_steps: int) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        _write_text(run_dir / "environment.json", json.dumps(environment, indent=2) + "\n")

    def log_task(self, task_index: int, results: RunResults) -> None:
        _write_text(self.run_dir / RESULTS_FILE, json.dumps(results.to_dict(), indent=2) + "\n")

    def finish(self, results: RunResults) -> None:
        if not hasattr(self, "run_dir"):  # the run failed before it started
            return
        self.log_task(results.completed_tasks - 1, results)
        plot_accuracy_matrix(results, self.run_dir / "accuracy_matrix.png")
        plot_learning_curves(results, self.run_dir / "learning_curves.png")


def load_results(run_dir: Path) -> RunResults:
    """The results a run folder holds (complete or partial)."""
    return RunResults.from_dict(json.loads((Path(run_dir) / RESULTS_FILE).read_text()))


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file so a killed run never leaves a half-written file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)
