"""Whole runs over two processes started by torchrun or ``metalearn run --nproc 2`` (CPU,
gloo): the few-shot accuracy of a short Omniglot run equals one process's, a killed process
stops the run with one clear line and the last checkpoint resumes (with as many processes
only), SIGTERM stops both processes at the same step, and learners that cannot run
distributed are refused before training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from metalearn.cli.config import ConfigError, load_config
from metalearn.cli.runner import run
from metalearn.learners import get_learner
from metalearn.learners.base import check_distributed
from metalearn.protocol.checkpoint import load_checkpoint
from metalearn.tracking import load_results


def torchrun(*args: str, processes: int = 2, **popen) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node processes -m metalearn ARGS`` (torch's own
    launcher, one thread per process as torchrun sets)."""
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={processes}", "-m", "metalearn", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finished(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def omniglot_config(tmp_path: Path, data_root: Path, **protocol) -> Path:
    """MAML on Omniglot 5-way 1-shot with a Conv4 of 8 channels, for seconds."""
    config = {
        "benchmark": {"name": "omniglot", "options": {"split": "maml"}},
        "learner": {"name": "maml", "options": {"inner_steps": 1, "eval_inner_steps": 2,
                                                "batching": "loop"}},
        "model": {"name": "conv4", "options": {"hidden": 8, "track_running_stats": False}},
        "protocol": {"steps_per_task": 6, "n_way": 5, "k_shot": 1, "q_query": 3,
                     "meta_batch_size": 3, "eval_episodes": 30, "eval_meta_batch_size": 10,
                     "log_every": 2, "checkpoint_every": 2, **protocol},
        "seed": 0, "device": "cpu", "data_root": str(data_root),
        "output_dir": str(tmp_path / "runs"), "wandb": {"mode": "disabled"},
    }
    path = tmp_path / "omniglot.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_processes_give_the_few_shot_accuracy_of_one(tmp_path, data_root):
    config = omniglot_config(tmp_path, data_root)
    two = subprocess.Popen(  # metalearn's own --nproc: torch.distributed's launcher
        [sys.executable, "-m", "metalearn", "run", str(config), "--run-dir", str(tmp_path / "two"),
         "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    one = run(load_config(config), run_dir=tmp_path / "one")
    returncode, stderr = finished(two)
    assert returncode == 0, stderr[-3000:]
    shared = load_results(tmp_path / "two")
    assert not np.isnan(one.accuracy).any()
    np.testing.assert_array_equal(shared.initial_accuracy, one.initial_accuracy)
    np.testing.assert_allclose(shared.accuracy, one.accuracy, rtol=0, atol=1e-12)
    np.testing.assert_allclose(shared.interval, one.interval, rtol=0, atol=1e-12)
    assert json.loads((tmp_path / "two" / "environment.json").read_text())["processes"] == 2


def children_by_rank(launcher: subprocess.Popen, processes: int = 2) -> dict[int, int]:
    """The pids of torchrun's worker processes by their RANK (read from /proc)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = {}
        for task in Path(f"/proc/{launcher.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                ranks = [v[5:] for v in environ if v.startswith(b"RANK=")]
                if ranks:
                    workers[int(ranks[0])] = int(pid)
        if len(workers) == processes:
            return workers
        time.sleep(0.2)
    raise AssertionError("torchrun did not start its workers")


def signal_after_first_checkpoint(tmp_path, data_root, number):
    """Start a 2-process Omniglot run, send ``number`` to rank 1 once a checkpoint exists;
    (run folder, the launcher's return code and stderr)."""
    config = omniglot_config(tmp_path, data_root, steps_per_task=400)
    run_dir = tmp_path / "run"
    launcher = torchrun("run", str(config), "--run-dir", str(run_dir))
    workers = children_by_rank(launcher)
    deadline = time.monotonic() + 90
    while not (run_dir / "checkpoint.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(workers[1], number)
    return (run_dir, *finished(launcher))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers in /proc")
def test_a_killed_process_stops_the_run_with_one_clear_line_and_the_checkpoint_resumes(
        tmp_path, data_root):
    run_dir, returncode, stderr = signal_after_first_checkpoint(tmp_path, data_root, signal.SIGKILL)
    assert returncode != 0
    lost = [line for line in stderr.splitlines() if line.startswith("[rank 0] error:")]
    assert len(lost) == 1, stderr[-3000:]
    assert "process 0 of 2 lost contact with the other processes of the run" in lost[0]
    assert f"The last checkpoint is in {run_dir}; continue with: metalearn run --resume " \
           f"{run_dir} --nproc 2" in lost[0]
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["processes"] == 2 and 0 < state["task_step"] < 400

    with pytest.raises(ConfigError, match="was trained by 2 process.es. and is resumed by 1"):
        run(load_config(run_dir / "config.yaml"), run_dir=run_dir, resume=True)
    returncode, stderr = finished(torchrun("run", "--resume", str(run_dir)), timeout=300)
    assert returncode == 0, stderr[-3000:]
    assert load_results(run_dir).completed_tasks == 1


def test_learners_that_cannot_run_distributed_are_refused_before_training(tmp_path, tiny_config):
    returncode, stderr = finished(torchrun("run", str(tiny_config()), "learner.name=dgr"))
    assert returncode != 0
    assert "[rank 0] error: learner 'dgr' cannot run over several processes yet (2 were " \
           "started): run it as one process (metalearn run, without torchrun)" in stderr
    assert not list((tmp_path / "runs").rglob("checkpoint.pt"))

    reptile = get_learner("reptile")
    with pytest.raises(ValueError, match="with inner_state: carried each episode starts from"):
        check_distributed(reptile, reptile.Options(), 2)
    check_distributed(reptile, reptile.Options(inner_state="fresh"), 2)
    check_distributed(reptile, reptile.Options(), 1)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers in /proc")
def test_sigterm_to_one_process_stops_every_process_at_the_same_step(tmp_path, data_root):
    # rank 1 alone gets it: rank 0 stops with it, not after it
    run_dir, returncode, stderr = signal_after_first_checkpoint(tmp_path, data_root, signal.SIGTERM)
    assert "lost contact" not in stderr, stderr[-3000:]
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stopped) == 1, stderr[-3000:]  # rank 0's line, for both
    assert f"continue with: metalearn run --resume {run_dir} --nproc 2" in stopped[0]
    assert 0 < load_checkpoint(run_dir / "checkpoint.pt")["task_step"] < 400
