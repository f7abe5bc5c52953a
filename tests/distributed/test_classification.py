"""Fine-tuning, EWC, online EWC, SI and MAS over two processes (gloo, started by torchrun),
each on its shard of every minibatch: two tasks of three training steps give the parameters,
optimizer state, importances and logged values of one process, in float64 to 1e-12; and a
short Split MNIST run (float32) gives one process's accuracies, to a test example flipped by
rounding."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from distributed_steps import BATCH, STEPS, train_classifier
from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import LearnerContext, get_learner
from metalearn.models import Conv4
from metalearn.tracking import load_results
from test_episodic import assert_close, steps_of_two_processes


@pytest.mark.parametrize("name", ["finetune", "ewc", "online_ewc", "si", "mas"])
def test_two_processes_take_the_steps_and_importances_of_one(name, tmp_path):
    two = steps_of_two_processes(name, tmp_path)
    state, logged, trained = train_classifier(name)
    assert (trained, two["adapted"]) == (2 * STEPS * BATCH, 2 * STEPS * (BATCH // 2)), \
        "rank 0 did not train on its 3 of 7 examples"
    if name != "finetune":
        assert state["penalty"]["terms"] == 2 and state["penalty"]["precision"][0].abs().sum() > 0
    assert_close(two["state"], state)
    assert_close(two["logged"], logged)


def test_a_split_mnist_run_over_two_processes_has_the_accuracies_of_one(tmp_path, tiny_config):
    config = tiny_config(learner={"name": "ewc", "options": {"fisher_samples": 300}},
                         protocol={"steps_per_task": 10, "batch_size": 33, "eval_batch_size": 2048})
    two = subprocess.Popen(
        [sys.executable, "-m", "metalearn", "run", str(config), "--run-dir", str(tmp_path / "two"),
         "--nproc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    one = run(load_config(config), run_dir=tmp_path / "one")
    _, stderr = two.communicate(timeout=120)
    assert two.returncode == 0, stderr[-3000:]
    shared = load_results(tmp_path / "two")
    assert not np.isnan(one.accuracy).any()
    # float32: the shards' gradients summed round otherwise than the whole minibatch's, which
    # may flip the prediction of an example on a decision boundary (1 of 2,000 seen), no more
    flipped = np.abs(shared.accuracy - one.accuracy) * np.asarray(one.test_sizes)
    assert flipped.max() <= 1.01, f"accuracies differ by {flipped.max():.0f} test examples"
    assert shared.metrics["acc"] == pytest.approx(one.metrics["acc"], abs=1 / min(one.test_sizes))


def test_a_model_with_batch_statistics_is_refused_over_several_processes(monkeypatch):
    monkeypatch.setattr("metalearn.learners.base.world_size", lambda: 2)
    ewc = get_learner("ewc")
    with pytest.raises(ValueError, match=r"the model's BatchNorm2d \(features.1\) normalises each "
                       "example with the statistics of the rest of its minibatch in training"):
        ewc(Conv4(5), ewc.Options(), LearnerContext(None, None, torch.device("cpu"), 0))
