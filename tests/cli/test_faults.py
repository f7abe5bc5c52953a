"""Runs never lose work: run folders, resumes, signals and non-finite states (issue 17)."""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from metalearn.cli.config import ConfigError, load_config
from metalearn.cli.main import main
from metalearn.cli.runner import run
from metalearn.learners import CLASSIFICATION, Learner, register
from metalearn.protocol import NonFiniteLossError
from metalearn.protocol.checkpoint import load_checkpoint
from metalearn.tracking import claim_run_dir, load_results


def folder_bytes(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def test_runs_started_in_the_same_second_get_folders_of_their_own(tiny_config, tmp_path,
                                                                  monkeypatch):
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 7, 12, 0, 0)

    monkeypatch.setattr("metalearn.cli.runner.datetime", Frozen)
    config = tiny_config(protocol__steps_per_task=1)
    slow, fast = (load_config(config, [f"learner.options.lr={lr}"]) for lr in (1e-4, 1e-2))
    run(slow)
    run(slow)  # the same settings in the same second: numbered, not overwritten
    run(fast)
    folders = sorted(p.name for p in (tmp_path / "runs" / "split_mnist").iterdir())
    name = f"finetune-class-seed0-{slow.fingerprint()}-20261207-120000"
    assert folders == sorted([name, f"{name}-2",
                              f"finetune-class-seed0-{fast.fingerprint()}-20261207-120000"])
    for folder in folders:
        assert load_results(tmp_path / "runs" / "split_mnist" / folder).completed_tasks == 5


def test_concurrent_claims_of_one_folder_never_share_it(tmp_path):
    claimed, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        claimed.append(claim_run_dir(tmp_path / "run", numbered=True))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 8
    with pytest.raises(FileExistsError, match="already holds a run"):
        claim_run_dir(tmp_path / "run")


def test_an_explicit_run_folder_holding_a_run_is_refused(tiny_config, tmp_path, capsys):
    config = tiny_config(protocol__steps_per_task=1)
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    before = folder_bytes(tmp_path / "run")
    capsys.readouterr()
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 1
    assert f"{tmp_path / 'run'} already holds a run: pass --resume" in capsys.readouterr().err
    assert folder_bytes(tmp_path / "run") == before


@pytest.fixture
def one_task_done(tiny_config, tmp_path):
    """A run folder stopped after its first task, as a kill would leave it."""
    config = load_config(tiny_config(protocol__steps_per_task=5))
    run_dir = tmp_path / "run"
    run(config, run_dir=run_dir)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    first = state["results"]
    first["completed_tasks"] = 1
    first["accuracy"] = [row if i == 0 else [None] * 5 for i, row in enumerate(first["accuracy"])]
    torch.save(state, run_dir / "checkpoint.pt")
    (run_dir / "results.json").write_text(json.dumps(first))
    return run_dir


def test_a_resume_from_a_truncated_checkpoint_changes_nothing_and_says_why(one_task_done, capsys):
    checkpoint = one_task_done / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    before = folder_bytes(one_task_done)
    assert main(["run", "--resume", str(one_task_done)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {checkpoint} cannot be read") and "truncated" in error
    assert "Traceback" not in error
    assert folder_bytes(one_task_done) == before
    assert load_results(one_task_done).completed_tasks == 1


def test_a_resume_with_an_edited_config_is_refused_naming_the_edits(one_task_done, capsys):
    config = one_task_done / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data["protocol"]["steps_per_task"], data["learner"]["options"]["lr"] = 2, 0.01
    config.write_text(yaml.safe_dump(data))
    before = folder_bytes(one_task_done)
    assert main(["run", "--resume", str(one_task_done)]) == 1
    error = capsys.readouterr().err
    assert ("other settings: learner.options.lr (was 0.001, now 0.01); "
            "protocol.steps_per_task (was 5, now 2)") in error
    assert folder_bytes(one_task_done) == before


def test_a_resume_keeps_the_environment_the_run_started_in(one_task_done):
    started = json.loads((one_task_done / "environment.json").read_text())
    assert main(["run", "--resume", str(one_task_done)]) == 0
    environment = json.loads((one_task_done / "environment.json").read_text())
    assert environment["command"] == started["command"]
    assert environment["started"] == started["started"]
    assert len(environment["resumes"]) == 1 and "resumes" not in environment["resumes"][0]
    assert load_results(one_task_done).completed_tasks == 5


def task_done(run_dir):
    try:
        return load_results(run_dir).completed_tasks >= 1
    except (OSError, ValueError):
        return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_with_its_results_plots_and_an_exit_status(tiny_config, tmp_path,
                                                                          stop):
    config = tiny_config(protocol__steps_per_task=400)
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "metalearn", "run", str(config), "--run-dir", str(run_dir)],
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not task_done(run_dir) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(stop)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + stop, err
    assert f"stopped by {stop.name}" in err and f"metalearn run --resume {run_dir}" in err
    assert "Traceback" not in err
    assert "stopped after" in out  # the results table of the completed tasks
    results = load_results(run_dir)
    assert 1 <= results.completed_tasks < 5
    assert (run_dir / "accuracy_matrix.png").is_file() and (run_dir / "learning_curves.png").is_file()
    assert load_checkpoint(run_dir / "checkpoint.pt")["results"]["completed_tasks"] == \
        results.completed_tasks


@register
class DivergesSilently(Learner):
    """Test learner: finite losses, but a NaN weight from task 1, step 3 on."""

    name = "test_diverges_silently"
    task_kinds = frozenset({CLASSIFICATION})

    def __init__(self, model, options, context):
        super().__init__(model, options, context)
        self.weight, self.task, self.step = torch.zeros(3), 0, 0

    def begin_task(self, task_index):
        self.task, self.step = task_index, 0

    def train_step(self, batch):
        self.step += 1
        if (self.task, self.step) == (1, 3):
            self.weight[1] = math.nan
        return {"loss": torch.tensor(1.0)}

    def predict(self, x, task_index):
        return torch.zeros(len(x), 10)

    def state_dict(self):
        return {"weight": self.weight.clone(), "steps": [self.step]}

    def load_state_dict(self, state):
        self.weight = state["weight"].clone()


def test_a_non_finite_learner_state_never_lands_in_a_checkpoint(tiny_config, tmp_path):
    config = load_config(tiny_config(learner={"name": "test_diverges_silently"}))
    with pytest.raises(NonFiniteLossError, match=r"state \['weight'\] holds NaN or infinite "
                                                 r"values after training on task 1 \('2/3'\)"):
        run(config, run_dir=tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert torch.isfinite(state["learner"]["weight"]).all()
    assert state["results"]["completed_tasks"] == 1
    kept = load_results(tmp_path / "run")
    assert kept.completed_tasks == 1 and np.isnan(kept.accuracy[1]).all()


@pytest.mark.parametrize("override, message", [
    ("protocol.batch_size=0", "'protocol.batch_size': Input should be greater than or equal to 1"),
    ("protocol.batch_size=-3", "'protocol.batch_size': Input should be greater than or equal to 1"),
    ("protocol.log_every=0", "'protocol.log_every': Input should be greater than or equal to 1"),
    ("protocol.steps_per_task=-5", "'protocol.steps_per_task': Input should be greater than or "
                                   "equal to 1"),
    ("protocol.n_way=1", "'protocol.n_way': Input should be greater than or equal to 2"),
    ("protocol.eval_episodes=1", "'protocol.eval_episodes': Input should be greater than or "
                                 "equal to 2"),
])
def test_every_bad_protocol_setting_is_one_line_naming_it(tiny_config, capsys, override, message):
    assert main(["run", str(tiny_config()), override]) == 1
    error = capsys.readouterr().err
    assert error == f"error: override {override!r}: config key {message} " \
                    f"(got {yaml.safe_load(override.split('=')[1])})\n"


def test_a_batch_larger_than_the_training_set_is_an_error_not_a_hang(tiny_config, tmp_path):
    config = tiny_config(protocol__batch_size=10**6)
    finished = subprocess.run(
        [sys.executable, "-m", "metalearn", "run", str(config), "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1
    assert finished.stderr.startswith("error: ") and "batch_size" in finished.stderr
    assert "Traceback" not in finished.stderr


@pytest.mark.parametrize("text, expected", [
    ("benchmark:\n  name: split_mnist\n learner: finetune\n", "line 3 column 2 is not valid YAML"),
    ("- benchmark\n- learner\n", "must be a mapping of keys"),
])
def test_malformed_yaml_names_the_file_and_the_line(tmp_path, capsys, text, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main(["run", str(config)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: config file {config}") and expected in error
    assert error.count("\n") == 1


def test_a_list_where_a_mapping_belongs_names_the_file_line_and_key(tmp_path, capsys):
    config = tmp_path / "list.yaml"
    config.write_text("benchmark:\n  name: split_mnist\nlearner:\n  name: finetune\n"
                      "model:\n  name: mlp\n  options:\n  - 64\n"
                      "protocol:\n  steps_per_task: 1\n")
    assert main(["run", str(config)]) == 1
    assert capsys.readouterr().err == (
        f"error: config file {config}, line 7: config key 'model.options': Input should be "
        "a valid dictionary (got [64])\n")


def test_a_malformed_override_names_the_override(tiny_config, capsys):
    assert main(["run", str(tiny_config()), "model.options.hidden=[400,"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: override 'model.options.hidden=[400,', line 1 column 6 is "
                            "not valid YAML")
    assert error.count("\n") == 1


def read_only(tmp_path, monkeypatch):
    """A read-only file system under ``tmp_path/ro`` (root ignores permission bits, so the
    file system's refusal is what a user on a read-only mount sees)."""
    original = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return tmp_path / "ro" / "runs"


def through_a_file(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "runs"


@pytest.mark.parametrize("output", [read_only, through_a_file])
def test_an_unwritable_output_folder_is_one_line(tiny_config, tmp_path, monkeypatch, capsys,
                                                 output):
    output_dir = output(tmp_path, monkeypatch)
    assert main(["run", str(tiny_config()), f"output_dir={output_dir}"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: cannot create the run folder {output_dir}/split_mnist/")
    assert "set output_dir=PATH or --run-dir PATH to a writable folder" in error
    assert error.count("\n") == 1


def test_overrides_after_the_flags_are_overrides(tiny_config, tmp_path, data_root, capsys):
    config = tiny_config(protocol__steps_per_task=1)
    run_dir = tmp_path / "run"
    assert main(["run", str(config), "--data-root", str(data_root), "seed=3",
                 "--run-dir", str(run_dir), "learner.options.lr=0.01"]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["seed"] == 3 and saved["learner"]["options"]["lr"] == 0.01
    with pytest.raises(SystemExit):
        main(["run", str(config), "--run-dir", str(tmp_path / "other"), "not-an-override"])
    assert "unrecognized arguments: not-an-override" in capsys.readouterr().err


def test_a_resume_of_a_folder_without_a_run_says_so(tiny_config, tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path)]) == 1
    assert f"config file {tmp_path / 'config.yaml'} does not exist" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="holds no run"):
        run(load_config(tiny_config()), run_dir=tmp_path / "empty", resume=True)
