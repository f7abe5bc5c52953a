"""Figures of a run: the accuracy matrix as a heatmap, and the learning curves.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, so importing this module
changes no global matplotlib state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metalearn.results import RunResults


def _title(results: RunResults) -> str:
    scenario = f", {results.scenario}-IL" if results.scenario else ""
    return f"{results.learner} on {results.benchmark}{scenario}, seed {results.seed}"


def plot_accuracy_matrix(results: RunResults, path: Path) -> Path:
    """Heatmap of R: row i is "after training on task i", column j is task j, values in %."""
    accuracy = 100 * results.accuracy
    n = len(results.task_names)
    figure = Figure(figsize=(1.2 + 0.9 * n, 1.0 + 0.8 * n))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(accuracy), vmin=0, vmax=100, cmap="viridis")
    figure.colorbar(image, ax=axes, label="accuracy (%)")
    axes.set_xticks(range(n), results.task_names, rotation=45, ha="right")
    axes.set_yticks(range(n), results.task_names)
    axes.set_xlabel("evaluated on task")
    axes.set_ylabel("after training on task")
    for i in range(n):
        for j in range(n):
            if not np.isnan(accuracy[i, j]):
                axes.text(j, i, f"{accuracy[i, j]:.1f}", ha="center", va="center",
                          color="white" if accuracy[i, j] < 60 else "black", fontsize=8)
    axes.set_title(_title(results), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def plot_learning_curves(results: RunResults, path: Path) -> Path:
    """One panel per logged quantity against the global step."""
    names = sorted(results.curves) or ["loss"]
    figure = Figure(figsize=(6, 2.6 * len(names)))
    FigureCanvasAgg(figure)
    for k, name in enumerate(names):
        axes = figure.add_subplot(len(names), 1, k + 1)
        points = np.array(results.curves.get(name, []), dtype=float).reshape(-1, 2)
        axes.plot(points[:, 0], points[:, 1], linewidth=1)
        axes.set_xlabel("global step")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
    figure.axes[0].set_title(_title(results), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
