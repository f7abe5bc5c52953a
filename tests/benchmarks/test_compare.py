"""benchmarks/compare.py: finished runs read from a sweep's summary or their folders, the
summary over seeds beside published numbers, and the best grid point by validation accuracy."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from metalearn.results import RunResults

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare", BENCHMARKS / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(learner: str, seed: int, acc: float, bwt: float = math.nan,
           scenario: str | None = "task") -> RunResults:
    results = RunResults.empty("split_mnist", learner, scenario, seed, ["a", "b"], [1, 1], False)
    results.metrics = {"acc": acc, "bwt": bwt, "fwt": 0.0, "forgetting": 0.0}
    results.timings = {"train_s/task_0": 8.0 * (seed + 1), "eval_s/task_0": 2.0 * (seed + 1)}
    results.completed_tasks = 2
    return results


def test_the_summary_is_the_mean_and_standard_error_over_seeds_beside_the_published_value(compare):
    rows = compare.summarize([(result("ewc", 0, 0.5), "ewc", {}), (result("ewc", 1, 0.7), "ewc", {}),
                              (result("si", 0, 0.9), "si", {})], {"ewc": {"task": 58.0}})
    ewc, si = rows
    assert ewc["seeds"] == [0, 1]
    assert ewc["acc_mean"] == 60.0
    assert ewc["acc_sem"] == pytest.approx(10.0)  # std (ddof 1) 14.14 / sqrt(2)
    assert ewc["difference"] == 2.0 and ewc["published"] == 58.0
    assert ewc["time_s_mean"] == 15.0  # (10 + 20) / 2
    assert math.isnan(ewc["bwt_mean"])
    assert si["acc_sem"] is None and si["difference"] is None  # one seed, nothing published
    assert ewc["acc_ci95_mean"] is None  # continual runs have no interval over test episodes


def test_few_shot_rows_carry_the_runs_confidence_interval(compare):
    runs = [result("maml", seed, 0.9, scenario=None) for seed in (0, 1)]
    runs[0].metrics["acc_ci95"], runs[1].metrics["acc_ci95"] = 0.002, 0.004
    (row,) = compare.summarize([(run, "maml", {}) for run in runs], {"maml": {"fewshot": 98.7}})
    assert row["acc_ci95_mean"] == pytest.approx(0.3)  # percent, mean over seeds
    assert row["published"] == 98.7  # a run without a scenario is looked up as few-shot
    header = [column.header for column in compare.table([row]).columns]
    assert header[header.index("ACC") + 1] == "95% CI of a run"


def test_the_best_grid_point_per_learner_and_scenario_has_the_highest_validation_accuracy(compare):
    low, high = ({"learner.options.strength": 1e5}, {"learner.options.strength": 1e6})
    runs = [(result("ewc", 0, 0.9), "ewc", low), (result("ewc", 0, 0.8), "ewc", high),
            (result("si", 0, 0.9), "si", low)]  # si did not validate: no candidate
    runs[0][0].metrics["val_acc"], runs[1][0].metrics["val_acc"] = 0.7, 0.75
    assert compare.best_options(compare.summarize(runs, {})) == {"ewc": {"task": {"strength": 1e6}}}


def write_run(folder: Path, results: RunResults) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results.to_dict()))
    return folder


def test_runs_are_read_from_a_sweeps_summary_and_from_run_folders(compare, tmp_path, capsys):
    seed0 = write_run(tmp_path / "ewc-seed0", result("ewc", 0, 0.5))
    stopped = result("ewc", 1, 0.6)
    stopped.completed_tasks = 1
    seed1 = write_run(tmp_path / "ewc-seed1", stopped)
    summary = tmp_path / "summary.json"
    point = {"learner.options.strength": 10.0}
    summary.write_text(json.dumps({"trials": [
        {"label": "ewc_online", "settings": point, "status": "ran", "run_dir": str(seed0)},
        {"label": "ewc_online", "settings": point, "status": "resumed", "run_dir": str(seed1)},
        {"label": "ewc_online", "settings": point, "status": "failed", "run_dir": str(tmp_path / "x")}]}))
    by_hand = write_run(tmp_path / "si-seed0", result("si", 0, 0.7))
    runs = compare.read_runs([str(summary), str(by_hand), f"si_strong={by_hand}"])
    assert [(r.seed, label, options) for r, label, options in runs] == [
        (0, "ewc_online", point), (0, "si", {}), (0, "si_strong", {})]
    assert f"leaving out {seed1}: it stopped after 1 of 2 tasks" in capsys.readouterr().out


def test_rows_carry_the_accuracy_on_seen_tasks_and_the_model_size_after_each_task(compare, tmp_path):
    runs = [result("cpg", 0, 0.75), result("cpg", 1, 0.75)]
    runs[0].accuracy[:] = [[0.9, 0.1], [0.7, 0.8]]
    runs[1].accuracy[:] = [[1.0, 0.2], [0.9, 0.6]]
    runs[0].task_values["model_size_bits"] = [1e6, 3e6]
    runs[1].task_values["model_size_bits"] = [1e6, 5e6]
    folder = write_run(tmp_path / "cpg-seed1", runs[1])
    (row,) = compare.summarize([(runs[0], "cpg", {}), *compare.read_runs([str(folder / "results.json")])], {})
    assert row["seen_acc"] == [95.0, 75.0]  # after task 0: (90 + 100) / 2; after task 1: (75 + 75) / 2
    assert row["model_size_bits"] == [1e6, 4e6]
    header = [column.header for column in compare.table([row]).columns]
    assert header[-1] == "model size after each task (Mbit)"
    assert list(compare.table([row]).columns[-1].cells) == ["1.0 / 4.0"]
