"""The figures are real, non-blank PNGs, also for partial runs and runs without curves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metalearn.results import RunResults
from metalearn.tracking import plot_accuracy_matrix, plot_learning_curves
from metalearn.tracking.plots import image_grid


def assert_png_with_content(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 10  # not one flat colour
    return pixels


def test_accuracy_matrix_of_a_partial_run(tmp_path: Path, partial) -> None:
    path = plot_accuracy_matrix(partial, tmp_path / "R.png")
    assert path == tmp_path / "R.png"
    assert_png_with_content(path)


def test_accuracy_matrix_leaves_unmeasured_cells_blank(tmp_path: Path, partial, finished) -> None:
    few = assert_png_with_content(plot_accuracy_matrix(partial, tmp_path / "partial.png"))
    full = assert_png_with_content(plot_accuracy_matrix(finished, tmp_path / "full.png"))
    white = lambda pixels: (pixels > 250).all(axis=2).mean()  # noqa: E731
    assert white(few) > white(full)  # the NaN row is drawn as background


def test_accuracy_matrix_of_a_single_task_and_of_many(tmp_path: Path) -> None:
    for n in (1, 20):
        results = RunResults.empty("b", "l", None, 0, [f"task {j}" for j in range(n)], [1] * n,
                                   episodic=False)
        results.accuracy[:] = np.tril(np.full((n, n), 0.8))
        assert_png_with_content(plot_accuracy_matrix(results, tmp_path / f"{n}.png"))


def test_learning_curves_with_task_boundaries(tmp_path: Path, finished) -> None:
    path = plot_learning_curves(finished, tmp_path / "curves.png", task_boundaries=[20, 40, 60])
    assert_png_with_content(path)


def test_learning_curves_without_any_curve(tmp_path: Path, partial) -> None:
    partial.curves = {}
    assert_png_with_content(plot_learning_curves(partial, tmp_path / "none.png"))


def test_importing_and_plotting_have_no_global_side_effects(tmp_path: Path) -> None:
    """Importing tracking loads neither matplotlib nor wandb; plotting never touches pyplot."""
    script = f"""
import subprocess
import sys
import metalearn.tracking as tracking
assert "matplotlib" not in sys.modules and "wandb" not in sys.modules, "imported at import time"
from metalearn.results import RunResults
results = RunResults.empty("b", "l", None, 0, ["a", "b"], [1, 1], episodic=False)
results.curves["loss"] = [(1, 1.0), (2, 0.5)]
tracking.plot_accuracy_matrix(results, {str(tmp_path / "R.png")!r})
tracking.plot_learning_curves(results, {str(tmp_path / "c.png")!r})
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
"""
    subprocess.run([sys.executable, "-c", script], check=True)


def test_image_grid_tiles_images_row_by_row_in_a_near_square() -> None:
    images = np.stack([np.full((1, 3, 2), k / 10) for k in range(1, 6)])  # 5 flat images
    grid = image_grid(images, padding=1)
    assert grid.shape == (2 * 4 + 1, 3 * 3 + 1, 1)  # 5 images: 2 rows of 3 columns
    for k in range(5):
        top, left = 1 + (k // 3) * 4, 1 + (k % 3) * 3
        assert np.all(grid[top : top + 3, left : left + 2, 0] == np.float32((k + 1) / 10))
    assert np.all(grid[5:8, 7:9] == 0)  # the sixth cell is empty
    assert grid.sum() == pytest.approx(sum(6 * (k + 1) / 10 for k in range(5)))
