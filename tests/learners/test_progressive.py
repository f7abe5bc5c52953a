"""Progressive Neural Networks: earlier columns untouched, laterals that carry the earlier
columns into the new one (against a hand-written forward pass), task-IL only, resume, model
size, and that it learns without forgetting."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_packnet import bright_pixel_stream, finish_task, train_task

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import LearnerContext
from metalearn.learners.progressive import Progressive
from metalearn.models import Conv4, MLP
from metalearn.tasks import Scenario

MODELS = {
    "mlp": lambda outputs: MLP(16, outputs, hidden=(32, 32)),
    "conv4 with BatchNorm statistics": lambda outputs: Conv4(outputs, hidden=8, track_running_stats=True),
}


def progressive(stream, model="mlp"):
    torch.manual_seed(0)
    return Progressive(MODELS[model](stream.n_outputs(Scenario.TASK)), Progressive.Options(lr=0.01),
                       LearnerContext(stream, Scenario.TASK, torch.device("cpu"), seed=0))


def inputs_of(stream):
    return torch.cat([stream[k].inputs(stream[k].test.images) for k in range(len(stream))])


def everything(module):
    """Copies of a module's parameters and buffers."""
    return {name: t.detach().clone() for name, t in
            [*module.named_parameters(), *module.named_buffers()]}


@pytest.mark.parametrize("model", MODELS)
def test_earlier_columns_are_bitwise_unchanged_after_later_tasks(model):
    stream = bright_pixel_stream()
    learner = progressive(stream, model)
    x = inputs_of(stream)
    kept, predictions = [], []
    for k in range(3):
        train_task(learner, k, steps=30)
        finish_task(learner, k)
        kept.append((everything(learner.columns[k]), everything(learner.laterals[k])))
        predictions.append(learner.predict(x, k))
    assert any(name.endswith("running_mean") for name in kept[0][0]) == (model != "mlp")
    for k in range(2):  # columns 0 and 1 after tasks 1 and 2
        assert all(torch.equal(t, kept[k][0][name]) for name, t in everything(learner.columns[k]).items())
        assert all(torch.equal(t, kept[k][1][name]) for name, t in everything(learner.laterals[k]).items())
        assert torch.equal(learner.predict(x, k), predictions[k])
    assert not torch.equal(everything(learner.columns[2])["head.weight"],
                           everything(learner.columns[0])["head.weight"])
    restored = progressive(stream, model)
    restored.load_state_dict(learner.state_dict())
    assert len(restored.columns) == 3
    assert all(torch.equal(restored.predict(x, k), learner.predict(x, k)) for k in range(3))


def test_the_new_column_adds_laterals_from_every_earlier_column_as_written_by_hand():
    stream = bright_pixel_stream()
    learner = progressive(stream)
    x = inputs_of(stream)
    for k in range(2):
        train_task(learner, k, steps=20)
        finish_task(learner, k)
    train_task(learner, 2, steps=20)
    columns = [{name: p.detach() for name, p in column.named_parameters()} for column in learner.columns]
    U = [[[lateral.weight.detach() for lateral in layer] for layer in laterals]
         for laterals in learner.laterals]  # U[k][l][j]: column j's h_(l+1) into column k
    flat = x.flatten(1)
    h1 = [F.relu(F.linear(flat, c["features.1.weight"], c["features.1.bias"])) for c in columns]
    h2 = [F.relu(F.linear(h1[k], c["features.3.weight"], c["features.3.bias"])
                 + sum(h1[j] @ U[k][0][j].T for j in range(k))) for k, c in enumerate(columns)]
    out = [F.linear(h2[k], c["head.weight"], c["head.bias"]) + sum(h2[j] @ U[k][1][j].T for j in range(k))
           for k, c in enumerate(columns)]
    assert [len(layer) for layer in learner.laterals[2]] == [2, 2]
    for k in range(3):
        torch.testing.assert_close(learner.predict(x, k), out[k])


def test_laterals_receive_gradients_and_change_the_new_columns_output():
    stream = bright_pixel_stream()
    learner = progressive(stream)
    x = inputs_of(stream)
    train_task(learner, 0)
    finish_task(learner, 0)
    untrained = learner.predict(x, 1)
    assert torch.equal(untrained, learner.predict(x, 2)), \
        "untrained tasks are answered by the column the next task starts from"
    train_task(learner, 1, steps=0)
    before = [p.detach().clone() for p in learner.laterals[1].parameters()]
    train_task(learner, 1, steps=1)
    assert len(learner.columns) == 2
    laterals = list(learner.laterals[1].parameters())
    assert len(laterals) == 2
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in laterals)
    assert all(not torch.equal(p, start) for p, start in zip(laterals, before)), "laterals did not train"
    train_task(learner, 1, steps=30)
    cut = copy.deepcopy(learner)
    with torch.no_grad():
        for p in cut.laterals[1].parameters():
            p.zero_()
    assert not torch.allclose(learner.predict(x, 1), cut.predict(x, 1), atol=1e-3)
    assert not torch.equal(learner.predict(x, 1), untrained)


def test_untrained_tasks_are_answered_by_the_column_training_starts_from_also_after_a_restore():
    stream = bright_pixel_stream()
    learner = progressive(stream)
    x = inputs_of(stream)
    with torch.no_grad():
        runners_network = learner.model(x)
    assert all(torch.equal(learner.predict(x, k), runners_network) for k in range(3)), \
        "before training (b) every task is answered by the runner's network, as for other learners"
    train_task(learner, 0, steps=20)
    finish_task(learner, 0)
    restored = progressive(stream)
    restored.load_state_dict(learner.state_dict())
    untrained = learner.predict(x, 2)
    assert torch.equal(restored.predict(x, 2), untrained)  # rebuilt from the seed alone
    learner.begin_task(1)  # the column it starts from, before any step
    assert torch.equal(learner.predict(x, 1), untrained)



def test_resume_after_a_kill_in_task_three_gives_the_uninterrupted_result(tiny_config, tmp_path,
                                                                         killed_and_resumed):
    config = load_config(tiny_config(learner={"name": "progressive", "options": {"lr": 0.01}},
                                     scenario="task", protocol__steps_per_task=30))
    reference = run(config, run_dir=tmp_path / "reference")
    resumed = killed_and_resumed(config)
    assert np.array_equal(resumed.accuracy, reference.accuracy)
    assert np.array_equal(resumed.initial_accuracy, reference.initial_accuracy)
    assert resumed.task_values == reference.task_values


def test_learns_split_mnist_without_forgetting_and_grows_by_a_column_and_its_laterals(tiny_config,
                                                                                       tmp_path):
    config = load_config(tiny_config(learner={"name": "progressive", "options": {"lr": 0.01}},
                                     scenario="task", protocol__steps_per_task=40))
    results = run(config, run_dir=tmp_path / "run")
    R = results.accuracy
    assert np.diag(R).min() > 0.9, f"a task was not learned: {np.diag(R)}"
    assert results.metrics["acc"] > 0.95  # chance: 0.5
    assert results.metrics["bwt"] == 0.0
    assert all(np.array_equal(R[j:, j], np.full(len(R) - j, R[j, j])) for j in range(len(R)))
    column = 784 * 64 + 64 + 64 * 10 + 10  # the tiny config's MLP, hidden [64]
    lateral = 64 * 10  # one hidden layer: laterals into the head only
    assert results.task_values["model_size_bits"] == [
        32 * ((k + 1) * column + k * (k + 1) // 2 * lateral) for k in range(5)]
