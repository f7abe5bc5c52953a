import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch

from metalearn.cli.config import ConfigError, load_config
from metalearn.cli.main import main
from metalearn.cli.runner import command_line, evaluate, run
from metalearn.learners import CLASSIFICATION, Learner, available_learners, register
from metalearn.protocol import NonFiniteLossError
from metalearn.tracking import load_results

REPO = Path(__file__).resolve().parents[2]


def test_a_run_writes_its_folder(tiny_config, tmp_path):
    results = run(load_config(tiny_config()), run_dir=tmp_path / "run")
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "environment.json", "results.json", "checkpoint.pt",
            "accuracy_matrix.png", "learning_curves.png"} <= names
    saved = load_results(tmp_path / "run")
    assert np.array_equal(saved.accuracy, results.accuracy)
    assert results.completed_tasks == 5 and not np.isnan(results.accuracy).any()
    assert set(results.metrics) >= {"acc", "bwt", "fwt", "forgetting"}
    # Fine-tuning in class-IL forgets: only the last task is remembered well.
    assert results.accuracy[-1, -1] > 0.9 and results.accuracy[-1, 0] < 0.5
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["torch"] == torch.__version__ and environment["seed"] == 0


def test_same_seed_same_accuracy_matrix_bit_for_bit(tiny_config, tmp_path):
    first = run(load_config(tiny_config()), run_dir=tmp_path / "a")
    second = run(load_config(tiny_config()), run_dir=tmp_path / "b")
    other = run(load_config(tiny_config(seed=1)), run_dir=tmp_path / "c")
    assert np.array_equal(first.accuracy, second.accuracy)
    assert np.array_equal(first.initial_accuracy, second.initial_accuracy)
    assert not np.array_equal(first.accuracy, other.accuracy)


def task_done(run_dir):
    """Whether the run has recorded a completed task (its checkpoint is written just before)."""
    try:
        return load_results(run_dir).completed_tasks >= 1
    except (OSError, ValueError):
        return False


def test_resume_after_a_kill_gives_the_uninterrupted_result(tiny_config, tmp_path):
    config = tiny_config(protocol__steps_per_task=400)
    reference = run(load_config(config), run_dir=tmp_path / "reference")
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "metalearn", "run", str(config),
                                "--run-dir", str(run_dir)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not task_done(run_dir) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = load_results(run_dir)
    assert 1 <= interrupted.completed_tasks < 5, "the run was not killed partway"
    assert main(["run", "--resume", str(run_dir)]) == 0
    resumed = load_results(run_dir)
    assert resumed.completed_tasks == 5
    assert np.array_equal(resumed.accuracy, reference.accuracy)


def test_resuming_with_other_settings_is_refused_and_names_them(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    finished = run(load_config(tiny_config()), run_dir=run_dir)
    changed = load_config(tiny_config(), ["protocol.steps_per_task=50", "learner.options.lr=0.5"])
    with pytest.raises(ConfigError, match=r"other settings: learner\.options\.lr \(was 0\.001, now "
                                          r"0\.5\); protocol\.steps_per_task \(was 20, now 50\)"):
        run(changed, run_dir=run_dir, resume=True)
    assert np.array_equal(load_results(run_dir).accuracy, finished.accuracy)  # nothing lost
    # Where results go and how often it checkpoints leave them unchanged: allowed.
    same = load_config(tiny_config(), ["protocol.checkpoint_every=0", "wandb.mode=disabled"])
    assert np.array_equal(run(same, run_dir=run_dir, resume=True).accuracy, finished.accuracy)


@register
class ExplodesOnTaskOne(Learner):
    """Test learner: a loss that becomes NaN at task 1, step 3."""

    name = "test_explodes"
    task_kinds = frozenset({CLASSIFICATION})

    def __init__(self, model, options, context):
        super().__init__(model, options, context)
        self.task, self.step = 0, 0

    def begin_task(self, task_index):
        self.task, self.step = task_index, 0

    def train_step(self, batch):
        self.step += 1
        return {"loss": torch.tensor(math.nan if (self.task, self.step) == (1, 4) else 1.0)}

    def predict(self, x, task_index):
        return torch.zeros(len(x), 10)


def test_nan_loss_stops_the_run_and_keeps_what_was_done(tiny_config, tmp_path, capsys):
    config = tiny_config(learner={"name": "test_explodes"})
    with pytest.raises(NonFiniteLossError, match="loss is nan at task 1 \\('2/3'\\), step 3"):
        run(load_config(config), run_dir=tmp_path / "run")
    kept = load_results(tmp_path / "run")
    assert kept.completed_tasks == 1 and not np.isnan(kept.accuracy[0]).any()
    assert np.isnan(kept.accuracy[1]).all()
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    # Through the command line it is one clear line, not a traceback.
    assert main(["run", str(config), "--run-dir", str(tmp_path / "cli")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: loss is nan at task 1") and "Traceback" not in error


def test_command_line_reports_config_errors_without_a_traceback(tiny_config, capsys):
    assert main(["run", str(tiny_config()), "learner.options.lrr=1"]) == 1
    assert "did you mean 'lr'" in capsys.readouterr().err


def test_evaluate_tests_a_finished_run_again_as_the_protocol_did(tiny_config, tmp_path, capsys):
    results = run(load_config(tiny_config()), run_dir=tmp_path / "run")
    again = evaluate(tmp_path / "run")
    assert [t["accuracy"] for t in again["tasks"]] == results.accuracy[-1].tolist()
    # Another scenario of the same benchmark: task-IL masks the other tasks' outputs, so the
    # early tasks the class-IL run forgot are recovered in part; its own file records it.
    task_il = evaluate(tmp_path / "run", ["scenario=task"])
    assert task_il["scenario"] == "task"
    assert np.mean([t["accuracy"] for t in task_il["tasks"]]) > results.accuracy[-1].mean()
    assert main(["evaluate", str(tmp_path / "run")]) == 0  # writes as_trained.json
    assert "written to" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "evaluations" / "scenario=task.json").read_text())
    assert saved["overrides"] == ["scenario=task"] and saved["scenario"] == "task"
    assert (tmp_path / "run" / "evaluations" / "as_trained.json").is_file()


def test_evaluate_explains_a_model_that_does_not_fit_an_unfinished_run_or_no_checkpoint(
        tiny_config, tmp_path, capsys):
    config = load_config(tiny_config(protocol__steps_per_task=1))
    run(config, run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="does not fit the evaluation's model"):
        evaluate(tmp_path / "run", ["model.options.hidden=[32]"])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state["results"]["completed_tasks"] = 3
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ConfigError, match="stopped after 3 of 5 tasks.*--resume"):
        evaluate(tmp_path / "run")
    (tmp_path / "run" / "checkpoint.pt").unlink()
    assert main(["evaluate", str(tmp_path / "run")]) == 1
    assert "holds no checkpoint.pt" in capsys.readouterr().err


def test_list_shows_learners_benchmarks_and_scenarios(capsys):
    assert main(["list"]) == 0
    listing = yaml.safe_load(capsys.readouterr().out)
    assert set(listing["learners"]) == set(available_learners())  # each with its defaults
    assert {"finetune", "joint", "pretrain_finetune", "dgr", "packnet", "maml"} <= set(listing["learners"])
    assert {"split_mnist", "omniglot"} <= set(listing["benchmarks"]) and "class" in listing["scenarios"]
    assert listing["learners"]["packnet"]["scenarios"] == ["task"]
    assert listing["learners"]["dgr"]["options"]["generator_hidden"] == [400, 400]


def test_task_order_is_given_or_drawn_from_the_seed(tiny_config, tmp_path):
    def names(**changes):
        config = load_config(tiny_config(protocol__steps_per_task=1, **changes))
        return run(config, run_dir=tmp_path / str(len(list(tmp_path.iterdir())))).task_names

    assert names(task_order=[4, 3, 2, 1, 0]) == ["8/9", "6/7", "4/5", "2/3", "0/1"]
    drawn = names(task_order="random")
    assert sorted(drawn) == ["0/1", "2/3", "4/5", "6/7", "8/9"]
    assert names(task_order="random") == drawn  # the same seed, the same order
    assert {tuple(names(task_order="random", seed=s)) for s in range(1, 4)} != {tuple(drawn)}
    with pytest.raises(ConfigError, match="task_order \\[0, 0, 1, 2, 3\\] is not a permutation"):
        names(task_order=[0, 0, 1, 2, 3])


def test_evaluate_tests_a_few_shot_run_on_another_benchmark_with_more_shots(data_root, tmp_path):
    config = {
        "benchmark": {"name": "omniglot", "options": {"split": "maml"}},
        "learner": {"name": "maml", "options": {"eval_inner_steps": 1}},
        "model": {"name": "conv4", "options": {"hidden": 8}},
        "protocol": {"steps_per_task": 2, "q_query": 2, "meta_batch_size": 2, "eval_episodes": 10,
                     "eval_meta_batch_size": 10},
        "device": "cpu", "data_root": str(data_root), "wandb": {"mode": "disabled"},
    }
    path = tmp_path / "fewshot.yaml"
    path.write_text(yaml.safe_dump(config))
    results = run(load_config(path), run_dir=tmp_path / "run")
    own = evaluate(tmp_path / "run")
    assert own["tasks"][0]["accuracy"] == results.accuracy[-1, 0]
    assert own["tasks"][0]["ci95"] == results.interval[-1, 0]
    digits = evaluate(tmp_path / "run", ["benchmark.name=omniglot_to_mnist", "protocol.k_shot=3"])
    assert digits["shots"] == {"n_way": 5, "k_shot": 3, "episodes": 10}
    assert digits["tasks"][0]["task"] == "omniglot-to-mnist" and 0 < digits["tasks"][0]["accuracy"] <= 1
    saved = tmp_path / "run" / "evaluations" / "benchmark.name=omniglot_to_mnist_protocol.k_shot=3.json"
    assert json.loads(saved.read_text())["tasks"] == digits["tasks"]


def test_the_recorded_command_reruns_from_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["/opt/venv/bin/metalearn", "run", str(tmp_path / "configs" / "my run.yaml"),
            "--data-root", "/srv/data", "learner.options.lr=0.01"]
    assert command_line(argv) == \
        "metalearn run 'configs/my run.yaml' --data-root /srv/data learner.options.lr=0.01"
