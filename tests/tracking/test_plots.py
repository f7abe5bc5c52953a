"""The figures say what the issue asks of them, read off the Figure objects, and are real,
non-blank PNGs, also for partial runs, runs without curves and results.json files from
before validation existed."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metalearn.results import RunResults
from metalearn.tracking import (
    accuracy_matrix_figure,
    accuracy_per_task_figure,
    learning_curves_figure,
    save_run_figures,
)
from metalearn.tracking.plots import accuracy_against_size_figure, image_grid, search_progress_figure


def assert_png_with_content(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 10  # not one flat colour
    return pixels


def vertical_lines(axes) -> list[float]:
    """x of each vertical line (axvline) on ``axes``."""
    return [line.get_xdata()[0] for line in axes.get_lines()
            if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2]


def texts(figure) -> list[str]:
    return [text.get_text() for axes in figure.axes for text in axes.texts]


@pytest.fixture
def few_shot() -> RunResults:
    """MAML-like: 300 iterations, validation every 100 peaking at 200, the state of 200 tested."""
    results = RunResults.empty("omniglot", "maml", None, 0, ["omniglot"], [600], episodic=True)
    results.curves["loss"] = [(50, 1.6), (100, 0.9), (150, 0.3), (200, 0.1), (250, 0.06),
                              (300, 0.05)]
    results.curves["accuracy"] = [(50, 0.3), (100, 0.6), (150, 0.85), (200, 0.95), (250, 0.97),
                                  (300, 0.99)]
    results.validation_curves["omniglot"] = [(100, 0.5), (200, 0.9), (300, 0.85)]
    results.task_end_steps = [300]
    results.selection = [{"rule": "best_validation", "step": 200, "validation_accuracy": 0.9}]
    results.accuracy[0, 0], results.interval[0, 0], results.completed_tasks = 0.9512, 0.0043, 1
    return results


def test_few_shot_curves_show_validation_the_tested_step_and_the_ci(few_shot) -> None:
    figure = learning_curves_figure(few_shot)
    loss, accuracy = figure.axes  # one panel per training curve, no more
    assert loss.get_ylabel() == "loss" and loss.get_yscale() == "log"  # 1.6 .. 0.05
    assert accuracy.get_ylabel() == "accuracy" and accuracy.get_yscale() == "linear"
    (validation,) = [line for line in accuracy.get_lines()
                     if line.get_label() == "validation accuracy"]
    np.testing.assert_array_equal(validation.get_ydata(), [0.5, 0.9, 0.85])
    assert vertical_lines(loss) == vertical_lines(accuracy) == [200]  # the tested state
    assert "test accuracy 95.12 ± 0.43 % (95% CI)" in loss.get_title()


def test_few_shot_runs_get_no_one_cell_accuracy_matrix(tmp_path: Path, few_shot) -> None:
    paths = save_run_figures(few_shot, tmp_path)
    assert [path.name for path in paths] == ["learning_curves.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learning_curves.png"]
    assert_png_with_content(paths[0])


def test_validation_alone_gets_an_accuracy_panel(few_shot) -> None:
    del few_shot.curves["accuracy"]  # a learner that returns only its loss
    figure = learning_curves_figure(few_shot)
    assert [axes.get_ylabel() for axes in figure.axes] == ["loss", "accuracy"]
    assert [line.get_label() for line in figure.axes[1].get_lines()] == [
        "validation accuracy", "tested state (step 200)"]


def test_every_training_value_gets_a_panel_on_a_scale_that_shows_it(finished) -> None:
    finished.curves["penalty"] = [(10, 0.0), (20, 0.01), (30, 5.0)]  # zero: no log scale
    finished.curves["loss"] = [(10, 2.0), (20, 0.05), (40, 2.5), (60, 0.01)]  # spikes at a switch
    figure = learning_curves_figure(finished)
    scales = {axes.get_ylabel(): axes.get_yscale() for axes in figure.axes}
    assert scales == {"loss": "log", "grad_norm": "linear", "penalty": "linear"}  # 3.0/1.0 < 10
    assert all(vertical_lines(axes) == [20, 40] for axes in figure.axes)  # the last end: no line
    assert "test accuracy" not in figure.axes[0].get_title()  # only one-task runs have one


def test_accuracy_per_task_has_a_line_per_task_and_labelled_task_ends(finished) -> None:
    figure = accuracy_per_task_figure(finished)
    (axes,) = figure.axes
    lines = {line.get_label(): line for line in axes.get_lines()
             if line.get_label() in finished.task_names}
    assert list(lines) == ["0/1", "2/3", "4/5"]
    np.testing.assert_array_equal(lines["2/3"].get_xdata(), [10, 20, 30, 40, 50, 60])
    np.testing.assert_allclose(lines["2/3"].get_ydata(), [45, 50, 55, 60, 65, 70])  # in %
    assert vertical_lines(axes) == [20, 40]
    assert texts(figure) == ["0/1", "2/3", "4/5"]  # over each task's stretch of training
    stars = [line for line in axes.get_lines() if line.get_marker() == "*"]
    np.testing.assert_allclose([(s.get_xdata()[0], s.get_ydata()[0]) for s in stars],
                               [(20, 60), (30, 55), (60, 60)])  # the states tested
    assert "validation accuracy" in axes.get_ylabel()


def test_accuracy_matrix_shows_b_beside_r(partial) -> None:
    figure = accuracy_matrix_figure(partial)
    strip, matrix = figure.axes[:2]  # then the colour bar
    assert [label.get_text() for label in strip.get_yticklabels()] == ["b: before training"]
    assert [text.get_text() for text in strip.texts] == ["50.0", "40.0", "30.0"]
    assert sorted(text.get_text() for text in matrix.texts) == sorted(
        ["99.0", "10.0", "20.0", "60.0", "98.0", "25.0"])  # row 2 unmeasured: no cell text


def test_accuracy_matrix_leaves_unmeasured_cells_blank(tmp_path: Path, partial, finished) -> None:
    for name, results in (("partial", partial), ("full", finished)):
        (tmp_path / name).mkdir()
        save_run_figures(results, tmp_path / name)
    few = assert_png_with_content(tmp_path / "partial" / "accuracy_matrix.png")
    full = assert_png_with_content(tmp_path / "full" / "accuracy_matrix.png")
    white = lambda pixels: (pixels > 250).all(axis=2).mean()  # noqa: E731
    assert white(few) > white(full)  # the NaN row is drawn as background


def test_a_results_file_from_before_validation_still_plots(tmp_path: Path, finished) -> None:
    """No validation curves, task ends or selection: accuracy per task falls back on R."""
    old = finished.to_dict()
    for key in ("validation_curves", "task_end_steps", "selection"):
        del old[key]
    results = RunResults.from_dict(old)
    paths = save_run_figures(results, tmp_path)
    assert [p.name for p in paths] == [
        "learning_curves.png", "accuracy_per_task.png", "accuracy_matrix.png"]
    for path in paths:
        assert_png_with_content(path)
    (axes,) = accuracy_per_task_figure(results).axes
    line = next(line for line in axes.get_lines() if line.get_label() == "0/1")
    np.testing.assert_allclose(line.get_ydata(), [99, 60, 50])  # R's column 0 in %
    np.testing.assert_array_equal(line.get_xdata(), [1, 2, 3])
    assert axes.get_xlabel() == "tasks trained" and vertical_lines(axes) == []


def test_a_run_stopped_in_its_second_task_plots_without_warnings(tmp_path: Path) -> None:
    """One point per task, at step 20: the first task's label must not push the layout away."""
    results = RunResults.empty("split_mnist", "l", "class", 0, ["0/1", "2/3", "4/5"], [1] * 3,
                               episodic=False)
    results.accuracy[0], results.completed_tasks, results.task_end_steps = [0.9, 0.1, 0.1], 1, [20]
    results.curves["loss"] = [(10, 0.5), (20, 0.3), (23, 0.2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in save_run_figures(results, tmp_path):
            assert_png_with_content(path)


def test_curves_and_matrices_of_any_size(tmp_path: Path, partial) -> None:
    partial.curves = {}
    assert texts(learning_curves_figure(partial)) == ["no training curves recorded"]
    for n in (2, 20):
        results = RunResults.empty("b", "l", None, 0, [f"task {j}" for j in range(n)], [1] * n,
                                   episodic=False)
        results.accuracy[:] = np.tril(np.full((n, n), 0.8))
        folder = tmp_path / str(n)
        folder.mkdir()
        for path in save_run_figures(results, folder):
            assert_png_with_content(path)


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
tracking.save_run_figures(results, {str(tmp_path)!r})
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


def test_accuracy_against_size_draws_each_sized_rows_growth_and_error() -> None:
    rows = [{"learner": "progressive", "scenario": "task", "seen_acc": [99.0, 98.0, 97.0],
             "model_size_bits": [1e6, 3e6, 6e6]},
            {"learner": "cpg", "scenario": "task", "seen_acc": [99.0, 99.0, 98.5],
             "model_size_bits": [1e6, 1.5e6, 1.6e6]},
            {"learner": "joint", "scenario": "task", "seen_acc": [99.0, 99.0, 99.0],
             "model_size_bits": None}]  # reported no size: no line
    growth, trade = accuracy_against_size_figure(rows, "Split MNIST").axes
    assert [line.get_label() for line in growth.get_lines()] == ["progressive (task)", "cpg (task)"]
    np.testing.assert_allclose(growth.get_lines()[0].get_ydata(), [1, 3, 6])  # Mbit per task
    cpg = [line for line in trade.get_lines() if line.get_label() == "cpg (task)"]
    np.testing.assert_allclose(cpg[0].get_xydata(), [[1, 1], [1.5, 1], [1.6, 1.5]])  # error in %
    assert growth.get_yscale() == "linear"  # linear growth drawn as a straight line
    assert trade.get_xscale() == trade.get_yscale() == "log"


def test_search_progress_draws_each_searchers_best_so_far_in_percent_and_the_references() -> None:
    curves = {"random": [(1, 0.80), (2, 0.85), (3, 0.85)], "darts": [(20.5, 0.9)]}
    (axes,) = search_progress_figure(curves, {"Conv4": 0.88}, "search").axes
    random, darts, conv4 = axes.get_lines()
    assert [line.get_label() for line in (random, darts, conv4)] == ["random", "darts", "Conv4"]
    np.testing.assert_allclose(random.get_xydata(), [[1, 80], [2, 85], [3, 85]])
    np.testing.assert_allclose(darts.get_xydata(), [[20.5, 90]])  # a lone point, as a marker
    assert darts.get_markersize() > random.get_markersize()
    np.testing.assert_allclose(conv4.get_ydata(), [88, 88])
