import io
import json
import math
import warnings

import numpy as np
import pytest
from rich.console import Console

from metalearn.results import RunResults
from metalearn.tracking import (
    ConsoleReporter,
    RunFolder,
    Trackers,
    WandbTracker,
    comparison_table,
    load_results,
    resolve_mode,
)
from wandb_log import logged

PNG = b"\x89PNG\r\n\x1a\n"
CONFIG = {"benchmark": {"name": "split_mnist"}, "learner": {"name": "finetune"},
          "scenario": "class", "seed": 3}


def partial_results() -> RunResults:
    results = RunResults.empty("split_mnist", "finetune", "class", 3, ["0/1", "2/3", "4/5"],
                               [100, 200, 300], episodic=False)
    results.initial_accuracy[:] = [0.5, 0.4, 0.3]
    results.accuracy[0] = [0.99, 0.1, 0.2]
    results.accuracy[1] = [0.6, 0.98, 0.25]
    results.completed_tasks = 2
    results.curves["loss"] = [(10, 1.5), (20, 0.7), (30, 0.4)]
    return results


def complete(results: RunResults) -> RunResults:
    results.accuracy[2] = [0.5, 0.7, 0.97]
    results.completed_tasks = 3
    results.metrics = {"acc": 0.7233, "bwt": -0.385}
    return results


def drive(tracker, run_dir, results):
    tracker.start(run_dir, CONFIG, {"torch": "x"}, total_steps=30)
    for step in range(3):
        tracker.log_train(0, step, step + 1, {"loss": 1.0 / (step + 1)})
    tracker.log_task(-1, results)
    tracker.log_task(0, results)
    tracker.log_task(1, results)
    tracker.finish(complete(results))
    tracker.close()


def test_run_folder_keeps_partial_results_then_everything(tmp_path):
    folder, results = RunFolder(), partial_results()
    folder.start(tmp_path, CONFIG, {"torch": "x"}, total_steps=30)
    folder.log_task(1, results)
    partial = load_results(tmp_path)
    assert partial.completed_tasks == 2 and math.isnan(partial.accuracy[2, 0])
    assert partial.accuracy[1, 1] == 0.98 and partial.curves["loss"][1] == (20, 0.7)
    folder.finish(complete(results))
    assert load_results(tmp_path).metrics == {"acc": 0.7233, "bwt": -0.385}
    assert "learner:\n  name: finetune" in (tmp_path / "config.yaml").read_text()
    assert json.loads((tmp_path / "environment.json").read_text()) == {"torch": "x"}
    for figure in ("accuracy_matrix.png", "learning_curves.png"):
        content = (tmp_path / figure).read_bytes()
        assert content.startswith(PNG) and len(content) > 5000


def test_console_prints_the_table_with_metrics(tmp_path):
    output = io.StringIO()
    drive(ConsoleReporter(Console(file=output, width=120)), tmp_path, partial_results())
    text = output.getvalue()
    for expected in ("0/1", "4/5", "after task 2", "97.00", "acc", "72.33", "-38.50"):
        assert expected in text


def test_comparison_table_has_a_row_per_run():
    first, second = complete(partial_results()), complete(partial_results())
    second.learner = "joint"
    output = io.StringIO()
    Console(file=output, width=120).print(comparison_table([first, second]))
    assert "finetune" in output.getvalue() and "joint" in output.getvalue()


def test_wandb_offline_run_holds_what_was_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    drive(Trackers([RunFolder(), WandbTracker(mode="offline", project="tests")]), tmp_path,
          partial_results())
    record = logged(tmp_path)
    assert record["run"].run_group == "split_mnist" and record["run"].display_name == "finetune-class-seed3"
    assert record["config"]["learner"] == {"name": "finetune"}
    losses = [row["train/loss"] for row in record["history"] if "train/loss" in row]
    assert losses == [1.0, 0.5, pytest.approx(1 / 3)]
    assert [row["task"] for row in record["history"] if "eval/acc_task_0" in row] == [-1, 0, 1]
    assert record["metrics"]["train/*"] == "global_step" and record["metrics"]["eval/*"] == "task"
    assert record["summary"]["acc"] == 0.7233 and record["summary"]["completed_tasks"] == 3
    final = record["history"][-1]
    assert final["accuracy_matrix/_type"] == "table-file"
    assert final["accuracy_heatmap/_type"] == "image-file"


def test_wandb_failure_is_a_warning_not_a_failed_run(tmp_path, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", broken)
    tracker = WandbTracker(mode="offline")
    with pytest.warns(UserWarning, match="wandb could not start.*no wandb today"):
        drive(tracker, tmp_path, partial_results())


def test_wandb_failing_mid_run_warns_once_and_stops_logging(tmp_path):
    class FlakyRun:
        calls = 0

        def log(self, values):
            FlakyRun.calls += 1
            raise ConnectionError("lost")

    tracker = WandbTracker(mode="offline")
    tracker.run = FlakyRun()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.log_train(0, 0, 1, {"loss": 1.0})
        tracker.log_train(0, 1, 2, {"loss": 1.0})
    assert FlakyRun.calls == 1 and len(caught) == 1 and "lost" in str(caught[0].message)


def test_auto_mode_is_offline_without_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    with pytest.raises(ValueError, match="unknown wandb mode 'sometimes'"):
        resolve_mode("sometimes")


def test_nan_entries_round_trip_through_json(tmp_path):
    results = partial_results()
    again = RunResults.from_dict(json.loads(json.dumps(results.to_dict())))
    assert np.array_equal(again.accuracy, results.accuracy, equal_nan=True)
