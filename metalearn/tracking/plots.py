"""Figures of a run: its learning curves, the accuracy on each task across the run, and R.

Each figure is built by a function that returns a ``matplotlib.figure.Figure`` (drawn with an
Agg canvas, never through pyplot, so no global backend is chosen and no figure outlives its
caller), and :func:`save_run_figures` writes those that fit a run: a few-shot run (one task)
has no accuracy matrix, whose single cell would say less than the title of its learning curves.
Every figure copes with the fields a run left empty (validation off, an older results.json).
matplotlib is imported on first use: it is slow to import and a run only needs it at the end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from metalearn.results import RunResults

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LEARNING_CURVES = "learning_curves.png"
ACCURACY_PER_TASK = "accuracy_per_task.png"
ACCURACY_MATRIX = "accuracy_matrix.png"
LOG_SCALE_SPAN = 10.0  # a curve spanning more than this factor is drawn on a log scale


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _title(results: RunResults) -> str:
    scenario = f", {results.scenario}-incremental" if results.scenario else ""
    return f"{results.learner} on {results.benchmark}{scenario}, seed {results.seed}"


def _points(points: list[tuple[int, float]]) -> np.ndarray:
    """(step, value) points as an [n, 2] float array (NaN for values stored as null)."""
    values = [(step, math.nan if value is None else value) for step, value in points]
    return np.array(values, dtype=float).reshape(-1, 2)


def _wants_log_scale(values: np.ndarray) -> bool:
    """Positive values that span more than LOG_SCALE_SPAN: a loss falling by orders of
    magnitude, or spiking at each task switch, whose shape a linear axis flattens."""
    finite = values[np.isfinite(values)]
    return finite.size > 1 and finite.min() > 0 and finite.max() / finite.min() > LOG_SCALE_SPAN


def _test_accuracy(results: RunResults) -> str:
    """The tested accuracy of a one-task run in %, with its 95% CI where episodic."""
    if results.completed_tasks < 1 or not np.isfinite(results.accuracy[0, 0]):
        return "not tested"
    text = f"test accuracy {100 * results.accuracy[0, 0]:.2f}"
    if results.interval is None or not np.isfinite(results.interval[0, 0]):
        return text + " %"
    return text + f" ± {100 * results.interval[0, 0]:.2f} % (95% CI)"


def _selected_step(results: RunResults, task: int) -> int | None:
    selection = results.selection[task] if task < len(results.selection) else None
    return None if not selection else selection.get("step")


def _mark_task_ends(axes: Axes, results: RunResults, labels: bool) -> None:
    """Dotted lines where a task's training ended (the last one ends the run), optionally
    with each task's name above the stretch of steps it was trained on."""
    ends = results.task_end_steps
    for end in ends[:-1]:
        axes.axvline(end, color="grey", linestyle=":", linewidth=1)
    if labels and ends:
        axes.set_xlim(left=0)  # the run starts at step 0: the first task's stretch is in view
        for start, end, name in zip([0, *ends], ends, results.task_names):
            axes.text((start + end) / 2, 1.01, name, transform=axes.get_xaxis_transform(),
                      ha="center", va="bottom", fontsize=7, in_layout=False)


def learning_curves_figure(results: RunResults) -> Figure:
    """One panel per training curve (every value the learner returned) against the global step,
    on a log scale where that shows its shape; dotted lines where a task ended.

    A one-task run (few-shot) also shows its validation accuracy on the accuracy panel, the
    step whose state was tested, and its test accuracy with the 95% CI in the title.
    """
    names = list(results.curves)
    single = len(results.task_names) == 1
    validation = _points(next(iter(results.validation_curves.values()), [])) if single else None
    if validation is not None and validation.size and "accuracy" not in names:
        names.append("accuracy")
    figure = _figure(7, 1.2 + 2.3 * max(len(names), 1))
    title = _title(results) + (f"\n{_test_accuracy(results)}" if single else "")
    if not names:
        axes = figure.add_subplot()
        axes.text(0.5, 0.5, "no training curves recorded", ha="center", va="center")
        axes.set_axis_off()
        axes.set_title(title, fontsize=9)
        return figure
    selected = _selected_step(results, 0) if single else None
    for k, name in enumerate(names):
        axes = figure.add_subplot(len(names), 1, k + 1, sharex=figure.axes[0] if k else None)
        points = _points(results.curves.get(name, []))
        if points.size:
            axes.plot(points[:, 0], points[:, 1], linewidth=1, label=f"training {name}")
        if name == "accuracy" and validation is not None and validation.size:
            axes.plot(validation[:, 0], validation[:, 1], marker=".", linewidth=1.2,
                      label="validation accuracy")
        if selected is not None:
            axes.axvline(selected, color="C3", linestyle="--", linewidth=1,
                         label=f"tested state (step {selected})")
        if _wants_log_scale(points[:, 1]):
            axes.set_yscale("log")
        _mark_task_ends(axes, results, labels=False)
        axes.set_ylabel(name)
        axes.grid(alpha=0.3, which="both")
        if len(axes.get_legend_handles_labels()[1]) > 1:
            axes.legend(fontsize=7)
    figure.axes[-1].set_xlabel("global step")
    figure.axes[0].set_title(title, fontsize=9)
    return figure


def _accuracy_by_task(results: RunResults) -> tuple[dict[str, np.ndarray], str]:
    """Per task, (global step, accuracy) points and what they measure: the validation curves
    if the run kept any, else R's column at the end of each completed task."""
    if results.validation_curves:
        curves = {name: _points(points) for name, points in results.validation_curves.items()}
        return curves, "validation accuracy"
    done = results.completed_tasks
    ends = results.task_end_steps[:done]
    steps = np.array(ends if len(ends) == done else range(1, done + 1), dtype=float)
    return {name: np.column_stack([steps, results.accuracy[:done, j]])
            for j, name in enumerate(results.task_names)}, "test accuracy after each task"


def accuracy_per_task_figure(results: RunResults) -> Figure:
    """Accuracy on each task across the whole run, one line per task, with each task's stretch
    of training labelled and the step whose state was tested marked on its line: forgetting
    shows as a line that falls once its task is over."""
    curves, measured = _accuracy_by_task(results)
    figure = _figure(8, 4.5)
    axes = figure.add_subplot()
    for j, name in enumerate(results.task_names):
        points = curves.get(name, np.empty((0, 2)))
        (line,) = axes.plot(points[:, 0], 100 * points[:, 1], marker=".", linewidth=1.2,
                            label=name)
        selected = _selected_step(results, j)
        at = points[points[:, 0] == selected, 1] if selected is not None else []
        if len(at):
            axes.plot([selected], [100 * at[0]], marker="*", markersize=11,
                      color=line.get_color(), linestyle="none")
    _mark_task_ends(axes, results, labels=True)
    axes.set_ylim(0, 101)
    axes.set_xlabel("global step" if results.task_end_steps or results.validation_curves
                    else "tasks trained")
    axes.set_ylabel(f"{measured} (%)")
    axes.grid(alpha=0.3)
    axes.legend(title="task", fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes.set_title(_title(results) + ("\n★: state tested" if results.selection else ""),
                   fontsize=9, pad=14)
    return figure


def accuracy_matrix_figure(results: RunResults) -> Figure:
    """Heatmap of R in %: row i is "after training on task i", column j is task j, with b
    (accuracy before any training) as a strip above it in the same columns, so forward
    transfer reads down a column. Unmeasured (NaN) cells stay blank: a partial run shows how
    far it got."""
    accuracy = 100 * np.asarray(results.accuracy, dtype=float)
    before = 100 * np.asarray(results.initial_accuracy, dtype=float)[None, :]
    n = len(results.task_names)
    size = min(2.5 + 0.75 * n, 18.0)
    figure = _figure(size + 1.5, size + 0.6)
    strip, axes = figure.subplots(2, 1, sharex=True,
                                  gridspec_kw={"height_ratios": [1, n]})
    fontsize = 8 if n <= 10 else max(4.0, 8 - (n - 10) / 3)
    for target, values in ((strip, before), (axes, accuracy)):
        image = target.imshow(np.ma.masked_invalid(values), vmin=0, vmax=100, cmap="viridis",
                              aspect="auto")
        for i, j in zip(*np.nonzero(np.isfinite(values))):
            target.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=fontsize,
                        color="white" if values[i, j] < 60 else "black")
    figure.colorbar(image, ax=[strip, axes], label="accuracy (%)", shrink=0.8)
    strip.set_yticks([0], ["b: before training"])
    strip.tick_params(axis="x", labelbottom=False)
    axes.set_xticks(range(n), results.task_names, rotation=45, ha="right")
    axes.set_yticks(range(n), results.task_names)
    axes.set_xlabel("evaluated on task j")
    axes.set_ylabel("R: after training on task i")
    strip.set_title(_title(results), fontsize=9)
    return figure


def run_figures(results: RunResults) -> dict[str, Callable[[RunResults], Figure]]:
    """The figures that fit ``results``, by file name: every run has its learning curves; a
    run of several tasks also its accuracy per task and its accuracy matrix."""
    figures: dict[str, Callable[[RunResults], Figure]] = {LEARNING_CURVES: learning_curves_figure}
    if len(results.task_names) > 1:
        figures[ACCURACY_PER_TASK] = accuracy_per_task_figure
        figures[ACCURACY_MATRIX] = accuracy_matrix_figure
    return figures


def save_run_figures(results: RunResults, folder: Path, overwrite: bool = True) -> list[Path]:
    """Write the figures that fit ``results`` into ``folder`` (keeping those already there
    unless ``overwrite``) and return their paths."""
    paths = []
    for name, build in run_figures(results).items():
        path = Path(folder) / name
        if overwrite or not path.exists():
            build(results).savefig(path, dpi=110)
        paths.append(path)
    return paths


def plot_loss_curves(curves: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """Mean loss against step, one line per optimizer, over runs [runs, steps] each, with a
    band of one standard error; log scale, as optimizer comparisons are usually drawn."""
    figure = _figure(6, 4)
    axes = figure.add_subplot()
    for name, losses in curves.items():
        losses = np.asarray(losses, dtype=float)
        mean = losses.mean(0)
        error = losses.std(0, ddof=1) / np.sqrt(len(losses)) if len(losses) > 1 else 0 * mean
        steps = np.arange(1, losses.shape[1] + 1)
        (line,) = axes.plot(steps, mean, linewidth=1.2, label=name)
        axes.fill_between(steps, mean - error, mean + error, color=line.get_color(), alpha=0.2)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("minibatch loss (mean over runs)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    axes.set_title(title, fontsize=9)
    figure.savefig(path, dpi=110)
    return Path(path)


def accuracy_against_size_figure(rows: list[dict], title: str) -> Figure:
    """Summary rows (``metalearn.sweep.summary``) that report model sizes, drawn two ways: the
    model's size after each task (a learner that grows a column per task rises linearly), and
    the error on the tasks seen so far against that size, one marker per task. Sizes in Mbit;
    the second panel is log-log: near-perfect task-IL learners differ by tenths of a percent,
    which a linear axis that also holds fine-tuning's forgetting flattens."""
    from matplotlib.ticker import FuncFormatter

    figure = _figure(11, 4.5)
    growth, trade = figure.subplots(1, 2)
    for row in rows:
        if not row.get("model_size_bits"):
            continue
        sizes = np.array([math.nan if v is None else v / 1e6 for v in row["model_size_bits"]])
        error = 100 - np.array(row["seen_acc"], dtype=float)[: len(sizes)]
        label = row["learner"] + (f" ({row['scenario']})" if row.get("scenario") else "")
        (line,) = growth.plot(np.arange(1, len(sizes) + 1), sizes, marker="o", linewidth=1.2, label=label)
        trade.plot(sizes, error, marker="o", linewidth=1, color=line.get_color(), label=label)
        trade.plot(sizes[-1:], error[-1:], marker="*", markersize=12, color=line.get_color())
    trade.set_xscale("log")
    trade.set_yscale("log")
    for axis in (trade.xaxis, trade.yaxis):  # 20, 0.5: not 2x10^1, 5x10^-1
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:e}"[0] in "235" else ""))
    for axes in (growth, trade):
        axes.grid(alpha=0.3, which="both")
    growth.xaxis.get_major_locator().set_params(integer=True)
    growth.set_xlabel("tasks trained")
    growth.set_ylabel("model size (Mbit: stored parameters, masks as bits)")
    trade.set_xlabel("model size (Mbit)")
    trade.set_ylabel("error on the tasks seen (100 - accuracy, %; lower is better)")
    trade.set_title("one marker per task; ★ after the last (100 - ACC)", fontsize=8)
    if growth.get_lines():
        growth.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure


def image_grid(images: np.ndarray, padding: int = 2) -> np.ndarray:
    """[n, C, H, W] images in [0, 1] tiled into one [rows*(H+p), cols*(W+p), C] array (near
    square), C being 1 or 3; empty cells stay black."""
    n, channels, height, width = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.zeros((rows * (height + padding) + padding, cols * (width + padding) + padding,
                     channels), dtype=np.float32)
    for k, image in enumerate(images):
        top = padding + (k // cols) * (height + padding)
        left = padding + (k % cols) * (width + padding)
        grid[top : top + height, left : left + width] = image.transpose(1, 2, 0)
    return grid


def save_image_grid(images: np.ndarray, path: Path, title: str) -> Path:
    """Save ``images`` ([n, C, H, W] in [0, 1]) as one grid figure, titled."""
    grid = image_grid(images)
    figure = _figure(6, 6.4)
    axes = figure.add_subplot()
    axes.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    axes.set_axis_off()
    axes.set_title(title, fontsize=9)
    figure.savefig(path, dpi=110)
    return Path(path)


def search_progress_figure(curves: dict[str, list[tuple[float, float]]],
                           references: dict[str, float], title: str) -> Figure:
    """Each architecture search's best validation score so far against the candidate-trainings
    it has spent (``curves``: searcher -> (spent, best) points; a lone point is drawn as a
    marker), with horizontal lines for ``references`` (e.g. Conv4 trained as a candidate)."""
    figure = _figure(7, 4.5)
    axes = figure.subplots()
    for name, points in curves.items():
        spent, best = np.array(points, dtype=float).reshape(-1, 2).T * [[1], [100]]
        axes.plot(spent, best, marker="o", markersize=3 if len(spent) > 1 else 8,
                  drawstyle="steps-post", linewidth=1.4, label=name)
    for name, score in references.items():
        axes.axhline(100 * score, color="grey", linestyle="--", linewidth=1, label=name)
    axes.set_xlabel("candidate-trainings spent")
    axes.set_ylabel("best validation accuracy so far (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    return figure
