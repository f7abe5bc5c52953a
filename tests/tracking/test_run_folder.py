"""The run folder holds config, environment, results after every task, and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from sample_run import CONFIG, ENVIRONMENT
from metalearn.results import RunResults
from metalearn.tracking import RunFolder, load_results
from metalearn.tracking.run_folder import load_validation_points

PNG = b"\x89PNG\r\n\x1a\n"


def assert_same(loaded: RunResults, expected: RunResults) -> None:
    for name in ("accuracy", "initial_accuracy"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(expected, name))
    for name in ("benchmark", "learner", "scenario", "seed", "task_names", "test_sizes",
                 "interval", "metrics", "curves", "timings", "completed_tasks",
                 "validation_curves", "task_end_steps", "selection"):
        assert getattr(loaded, name) == getattr(expected, name), name
    assert loaded.task_values.keys() == expected.task_values.keys()
    for name, values in expected.task_values.items():
        np.testing.assert_array_equal(loaded.task_values[name], values)  # NaN where unreported


def test_a_whole_run_leaves_every_file(tmp_path: Path, drive) -> None:
    results = drive(RunFolder(), tmp_path)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == CONFIG
    assert list(yaml.safe_load((tmp_path / "config.yaml").read_text())) == list(CONFIG)  # order
    assert json.loads((tmp_path / "environment.json").read_text()) == ENVIRONMENT
    assert_same(load_results(tmp_path), results)
    for figure in ("accuracy_matrix.png", "accuracy_per_task.png", "learning_curves.png"):
        content = (tmp_path / figure).read_bytes()
        assert content.startswith(PNG) and len(content) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "accuracy_matrix.png", "accuracy_per_task.png", "config.yaml", "environment.json",
        "learning_curves.png", "results.json", "validation.jsonl"]  # no temporary files left behind


def test_each_validation_point_is_on_disk_as_the_run_makes_it(tmp_path: Path) -> None:
    folder = RunFolder()
    folder.start(tmp_path, CONFIG, ENVIRONMENT, total_steps=60)
    assert load_validation_points(tmp_path) == []  # not validated yet
    folder.log_validation(0, 10, {"0/1": 0.55, "2/3": 0.45, "4/5": 0.35})
    folder.log_validation(1, 30, {"0/1": 0.65, "2/3": 0.55, "4/5": 0.45})
    points = load_validation_points(tmp_path)  # no task has ended: results.json does not exist
    assert [(point["task"], point["step"]) for point in points] == [(0, 10), (1, 30)]
    # the score is the mean over the tasks seen: task 0's alone, then (0.65 + 0.55) / 2
    assert [point["score"] for point in points] == [0.55, pytest.approx(0.60)]
    assert points[1]["accuracies"] == {"0/1": 0.65, "2/3": 0.55, "4/5": 0.45}
    with (tmp_path / "validation.jsonl").open("a") as handle:  # a line being appended
        handle.write('{"task": 2, "step": 5')
    assert load_validation_points(tmp_path) == points


def test_results_exist_after_each_task_before_the_run_finishes(tmp_path: Path, partial) -> None:
    folder = RunFolder()
    folder.start(tmp_path, CONFIG, ENVIRONMENT, total_steps=60)
    folder.log_task(1, partial)
    loaded = load_results(tmp_path)
    assert_same(loaded, partial)
    assert np.isnan(loaded.accuracy[2]).all()  # NaN survives JSON (stored as null)
    assert loaded.curves["loss"][1] == (20, 0.7)
    assert not (tmp_path / "accuracy_matrix.png").exists()


def test_a_run_stopped_early_still_gets_results_and_figures(tmp_path: Path, partial) -> None:
    folder = RunFolder()
    folder.start(tmp_path, CONFIG, ENVIRONMENT, total_steps=60)
    folder.finish(partial)
    assert load_results(tmp_path).completed_tasks == 2
    assert (tmp_path / "accuracy_matrix.png").read_bytes().startswith(PNG)


def test_finish_without_start_writes_nothing(tmp_path: Path, partial) -> None:
    RunFolder().finish(partial)  # the runner calls finish even when start failed
    assert list(tmp_path.iterdir()) == []


def test_episodic_intervals_round_trip(tmp_path: Path) -> None:
    results = RunResults.empty("omniglot", "maml", None, 0, ["omniglot"], [600], episodic=True)
    results.accuracy[0, 0], results.interval[0, 0] = 0.95, 0.004
    folder = RunFolder()
    folder.start(tmp_path / "nested" / "run", {}, {}, total_steps=1)
    folder.log_task(0, results)
    folder.finish(results)
    loaded = load_results(tmp_path / "nested" / "run")
    assert loaded.interval.tolist() == [[0.004]] and loaded.scenario is None
    assert not (tmp_path / "nested" / "run" / "accuracy_matrix.png").exists()  # one task
    assert (tmp_path / "nested" / "run" / "learning_curves.png").read_bytes().startswith(PNG)


def test_loading_a_folder_without_results_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="results.json does not exist"):
        load_results(tmp_path)


def test_images_a_learner_shows_are_saved_per_task(tmp_path: Path, partial) -> None:
    folder = RunFolder()
    folder.start(tmp_path, CONFIG, ENVIRONMENT, total_steps=60)
    samples = np.random.default_rng(0).random((10, 1, 8, 8))
    folder.log_images(0, {"samples": samples})
    folder.log_images(1, {"samples": samples, "reconstructions": samples})
    saved = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert saved == ["reconstructions_task_1.png", "samples_task_0.png", "samples_task_1.png"]
    assert all((tmp_path / "images" / name).read_bytes().startswith(PNG) for name in saved)
