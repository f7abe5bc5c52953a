"""Figures of a run: the accuracy matrix as a heatmap, and the learning curves.

Figures are drawn on ``matplotlib.figure.Figure`` with an Agg canvas, never through pyplot, so
no global backend is chosen and no figure outlives its function. matplotlib is imported on
first use: it is slow to import and a run only needs it at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from metalearn.results import RunResults

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _title(results: RunResults) -> str:
    scenario = f", {results.scenario}-incremental" if results.scenario else ""
    return f"{results.learner} on {results.benchmark}{scenario}, seed {results.seed}"


def plot_accuracy_matrix(results: RunResults, path: Path) -> Path:
    """Heatmap of R in %: row i is "after training on task i", column j is task j.

    Unmeasured (NaN) cells stay blank, so a partial run shows how far it got.
    """
    accuracy = 100 * np.asarray(results.accuracy, dtype=float)
    n = len(results.task_names)
    size = min(2.5 + 0.75 * n, 18.0)
    figure = _figure(size + 1.5, size)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(accuracy), vmin=0, vmax=100, cmap="viridis")
    figure.colorbar(image, ax=axes, label="accuracy (%)", shrink=0.8)
    axes.set_xticks(range(n), results.task_names, rotation=45, ha="right")
    axes.set_yticks(range(n), results.task_names)
    axes.set_xlabel("evaluated on task j")
    axes.set_ylabel("after training on task i")
    fontsize = 8 if n <= 10 else max(4.0, 8 - (n - 10) / 3)
    for i, j in zip(*np.nonzero(np.isfinite(accuracy))):
        value = accuracy[i, j]
        axes.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=fontsize,
                  color="white" if value < 60 else "black")
    axes.set_title(_title(results), fontsize=9)
    figure.savefig(path, dpi=110)
    return Path(path)


def plot_learning_curves(results: RunResults, path: Path,
                         task_boundaries: Sequence[int] = ()) -> Path:
    """One panel per curve against the global step; dotted lines where a new task began."""
    names = list(results.curves)
    figure = _figure(7, 1.2 + 2.3 * max(len(names), 1))
    if not names:
        axes = figure.add_subplot()
        axes.text(0.5, 0.5, "no training curves recorded", ha="center", va="center")
        axes.set_axis_off()
    for k, name in enumerate(names):
        axes = figure.add_subplot(len(names), 1, k + 1)
        points = np.array(results.curves[name], dtype=float).reshape(-1, 2)
        axes.plot(points[:, 0], points[:, 1], linewidth=1)
        last = points[:, 0].max(initial=0)
        for boundary in task_boundaries:
            if boundary < last:
                axes.axvline(boundary, color="grey", linestyle=":", linewidth=1)
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
    figure.axes[-1].set_xlabel("global step")
    figure.axes[0].set_title(_title(results), fontsize=9)
    figure.savefig(path, dpi=110)
    return Path(path)


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
