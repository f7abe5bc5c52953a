"""The summary of finished runs over seeds, beside published numbers: what ``benchmarks/compare.py``
prints and ``metalearn reproduce``'s report tabulates (one place for both).

A row is one label (a config file's stem, e.g. ``dgr_distill``), scenario and grid point: each
metric's mean and standard error over seeds in %, the published ACC and our gap to it, for
few-shot runs the mean 95% confidence interval over test episodes, the run time, and after each
task the mean accuracy on the tasks seen so far and the model's size in bits where the learner
reports it (what :func:`metalearn.tracking.plots.accuracy_against_size_figure` draws).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from rich.table import Table

from metalearn.results import RunResults
from metalearn.tracking.run_folder import RESULTS_FILE

METRICS = ("acc", "bwt", "fwt", "forgetting")
MODEL_SIZE = "model_size_bits"  # a task value (results.json task_values), per task
SIZE_COLUMN = "model size after each task (Mbit)"


def read_results(path: str | Path) -> RunResults:
    """The results of a run folder, or of a results file kept on its own (``runs/<name>.json``
    of older committed results)."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: give a run folder or its results.json")
    return RunResults.from_dict(json.loads(file.read_text()))


def unfinished(path: str | Path, result: RunResults) -> str | None:
    """Why ``result`` is left out of a summary (it has not finished), or None."""
    if result.completed_tasks < len(result.task_names):
        return (f"{path}: it stopped after {result.completed_tasks} of {len(result.task_names)} "
                "tasks (run it again to finish it)")
    if not result.metrics:  # stopped after its last task, before its metrics were written
        return f"{path}: it stopped before writing its metrics (run it again to finish it)"
    return None


def load_finished(path: str | Path) -> RunResults | None:
    """The results of a finished run; None, with a note, for one that has not finished."""
    result = read_results(path)
    note = unfinished(path, result)
    if note:
        print(f"leaving out {note}")
        return None
    return result


def summarize(results: list[tuple[RunResults, str, dict]], published: dict) -> list[dict]:
    """One row per label, scenario and grid point: each metric's mean and standard error over
    seeds (in %), beside the published ACC (``published[label][scenario or "fewshot"]``)."""
    groups: dict[tuple, list[RunResults]] = {}
    for result, label, point in results:
        groups.setdefault((label, result.scenario, json.dumps(point, sort_keys=True)), []).append(result)
    rows = []
    for (learner, scenario, point), runs in groups.items():
        reference = published.get(learner, {}).get(scenario or "fewshot")
        row = {"learner": learner, "scenario": scenario, "options": json.loads(point),
               "seeds": [r.seed for r in runs], "published": reference}
        for metric in (*METRICS, "val_acc"):
            values = np.array([100 * r.metrics.get(metric, np.nan) for r in runs])
            row[f"{metric}_mean"] = round(float(values.mean()), 2)
            row[f"{metric}_sem"] = (round(float(values.std(ddof=1) / np.sqrt(len(runs))), 2)
                                    if len(runs) > 1 else None)
        intervals = [r.metrics["acc_ci95"] for r in runs if r.metrics.get("acc_ci95") is not None]
        row["acc_ci95_mean"] = round(100 * float(np.mean(intervals)), 2) if intervals else None
        row["difference"] = None if reference is None else round(row["acc_mean"] - reference, 2)
        # seconds of training and evaluation (the run's timings), without start-up and data loading
        row["time_s_mean"] = round(float(np.mean([sum(r.timings.values()) for r in runs])), 1)
        row["seen_acc"] = [round(100 * float(np.mean([seen_accuracy(r.accuracy, i) for r in runs])), 2)
                           for i in range(len(runs[0].task_names))]
        sizes = [r.task_values[MODEL_SIZE] for r in runs if MODEL_SIZE in r.task_values]
        row[MODEL_SIZE] = [round(float(v)) if math.isfinite(v) else None
                           for v in np.mean(sizes, axis=0)] if sizes else None
        rows.append(row)
    return rows


def seen_accuracy(R: np.ndarray, i: int) -> float:
    """Mean accuracy on tasks 0..i after training on task i (ACC had the run stopped there);
    NaN where that row of R is not measured yet."""
    row = np.asarray(R, dtype=float)[i, : i + 1]
    return float(row.mean()) if row.size else math.nan


def best_options(rows: list[dict]) -> dict:
    """learner -> scenario -> the options of the grid point with the highest mean validation
    accuracy (never the test set's); rows of runs that did not validate are no candidates."""
    best: dict = {}
    validated = [row for row in rows if not np.isnan(row["val_acc_mean"])]
    for row in sorted(validated, key=lambda r: r["val_acc_mean"]):
        best.setdefault(row["learner"], {})[row["scenario"] or "fewshot"] = {
            key.rsplit(".", 1)[-1]: value for key, value in row["options"].items()}
    return best


def cell(row: dict, metric: str) -> str:
    """``mean ± s.e.`` of ``metric`` in a row (the mean alone for one seed)."""
    error = row[f"{metric}_sem"]
    return f"{row[f'{metric}_mean']:.2f}" + ("" if error is None else f" ± {error:.2f}")


def interval(half_width: float | None) -> str:
    return "" if half_width is None else f"± {half_width:.2f}"


def sizes_cell(sizes: list[float | None] | None) -> str:
    """Model sizes after each task in Mbit, ``a / b / c``."""
    return "" if not sizes else " / ".join("–" if v is None else f"{v / 1e6:.1f}" for v in sizes)


def table(rows: list[dict]) -> Table:
    view = Table(title="Metrics over seeds (%, mean ± s.e.): ours vs published ACC")
    intervals = any(r["acc_ci95_mean"] is not None for r in rows)  # few-shot: over test episodes
    columns = ["learner", "scenario", *(["options"] if any(r["options"] for r in rows) else []),
               "seeds", "ACC", *(["95% CI of a run"] if intervals else []), "published",
               "difference", "BWT", "FWT", "forgetting",
               *(["validation ACC"] if any(not np.isnan(r["val_acc_mean"]) for r in rows) else []),
               *([SIZE_COLUMN] if any(r[MODEL_SIZE] for r in rows) else [])]
    for column in columns:
        view.add_column(column)
    for row in rows:
        options = [" ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in row["options"].items())]
        view.add_row(row["learner"], str(row["scenario"]), *(options if "options" in columns else []),
                     str(len(row["seeds"])), cell(row, "acc"),
                     *([interval(row["acc_ci95_mean"])] if intervals else []), str(row["published"]),
                     str(row["difference"]), cell(row, "bwt"), cell(row, "fwt"), cell(row, "forgetting"),
                     *([cell(row, "val_acc")] if "validation ACC" in columns else []),
                     *([sizes_cell(row[MODEL_SIZE])] if SIZE_COLUMN in columns else []))
    return view
