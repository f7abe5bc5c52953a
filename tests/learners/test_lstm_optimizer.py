"""The LSTM optimizer (Andrychowicz et al. 2016): the gradient preprocessing by its formula,
one batched LSTM call equal to a separate LSTM per coordinate, meta-training that must lower
the meta-loss on a family of quadratics, the learner in the protocol (fresh optimisees,
resume), and keeping the best rule on held-out optimisees."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import LearnerContext
from metalearn.learners.coordinatewise import flatten, log_and_sign, lstm_step, unflatten
from metalearn.learners.lstm_optimizer import OPTIMISEE_INIT, CoordinatewiseLSTM, LSTMOptimizer
from metalearn.models import reinitialise

CPU = torch.device("cpu")


@pytest.mark.parametrize("p", [10.0, 5.0])
def test_preprocessing_follows_the_papers_formula_on_both_branches(p):
    threshold = math.exp(-p)
    values = torch.tensor([1.0, -0.5, 3 * threshold, threshold, threshold / 2, -threshold / 10, 0.0],
                          dtype=torch.float64)
    expected = torch.tensor([
        [0.0, 1.0],
        [math.log(0.5) / p, -1.0],
        [math.log(3 * threshold) / p, 1.0],
        [-1.0, 1.0],  # |g| = e^-p is on the log branch: log(e^-p) / p = -1
        [-1.0, 0.5],  # below e^-p: (-1, e^p g)
        [-1.0, -0.1],
        [-1.0, 0.0],
    ], dtype=torch.float64)
    torch.testing.assert_close(log_and_sign(values, p), expected, rtol=1e-12, atol=1e-12)


def test_preprocessing_has_a_finite_gradient_at_zero():
    g = torch.tensor([0.0, 1e-9, 2.0], requires_grad=True)
    log_and_sign(g).sum().backward()
    assert torch.isfinite(g.grad).all()


def test_flatten_and_unflatten_are_inverse():
    params = {"w": torch.randn(3, 4), "b": torch.randn(4), "s": torch.randn(())}
    vector = flatten(params)
    assert vector.shape == (17,)
    restored = unflatten(vector, params)
    assert list(restored) == list(params)
    for name in params:
        assert torch.equal(restored[name], params[name])


def test_the_fused_lstm_step_equals_torch_lstm_cell():
    torch.manual_seed(0)
    cell = nn.LSTMCell(4, 20).double()
    inputs = torch.randn(50, 4, dtype=torch.float64)
    state = tuple(torch.randn(50, 20, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        for s in (None, state):
            for ours, reference in zip(lstm_step(cell, inputs, s), cell(inputs, s)):
                torch.testing.assert_close(ours, reference, rtol=0, atol=1e-14)


def test_one_batched_call_equals_an_lstm_per_coordinate():
    """Shared weights, a state of its own for each coordinate: processing all coordinates
    together gives each the update a separate run over it alone would."""
    torch.manual_seed(0)
    network = CoordinatewiseLSTM(hidden=5, layers=2, output_scale=0.1).double()
    gradients = [torch.randn(6, dtype=torch.float64) * 10.0 ** torch.arange(-6, 0) for _ in range(3)]
    state = network.initial_state(gradients[0])
    together = []
    for g in gradients:
        update, state = network(g, state)
        together.append(update)
    for k in range(6):
        single = network.initial_state(gradients[0][k:k + 1])
        for t, g in enumerate(gradients):
            update, single = network(g[k:k + 1], single)
            torch.testing.assert_close(update, together[t][k:k + 1], rtol=1e-12, atol=1e-15)


class Quadratic(nn.Module):
    """The optimisee of the paper's first experiment: f(theta) = ||W theta - y||^2, 10-d."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.empty(10))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.theta)


class QuadraticLSTMOptimizer(LSTMOptimizer):
    """The learner with a batch meaning one quadratic (W, y) instead of labelled images."""

    def loss(self, model, params, batch):
        W, y = batch
        return ((W @ params["theta"] - y) ** 2).sum()

    def selection_batches(self, k):
        generator = torch.Generator().manual_seed(1000 + k)
        problem = (torch.randn(10, 10, generator=generator), torch.randn(10, generator=generator))
        return [problem] * self.options.horizon


def quadratics(generator):
    """Endless steps of random quadratic problems, each fixed for a whole optimisee."""
    while True:
        problem = (torch.randn(10, 10, generator=generator), torch.randn(10, generator=generator))
        yield from [problem] * 20


def mean_trajectory_loss(learner, problems, n=20):
    torch.manual_seed(123)
    losses = []
    for _ in range(n):
        losses.append(np.mean(learner.trajectory(Quadratic(), [next(problems)] * 20)))
    return float(np.mean(losses))


def test_meta_training_on_quadratics_lowers_the_meta_loss():
    torch.manual_seed(0)
    options = QuadraticLSTMOptimizer.Options(unroll=20, horizon=20, lr=0.01, output_scale=0.1)
    learner = QuadraticLSTMOptimizer(Quadratic(), options, LearnerContext(None, None, CPU, 0))
    held_out = torch.Generator().manual_seed(99)
    before = mean_trajectory_loss(learner, quadratics(held_out.manual_seed(99)))
    training, meta_losses = quadratics(torch.Generator().manual_seed(0)), []
    for _ in range(20 * 150):
        values = learner.train_step(next(training))
        if "meta_loss" in values:
            meta_losses.append(float(values["meta_loss"]))
    after = mean_trajectory_loss(learner, quadratics(held_out.manual_seed(99)))
    assert np.mean(meta_losses[-20:]) < 0.5 * np.mean(meta_losses[:20])
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("second_derivatives", [False, True])
def test_the_meta_gradient_equals_the_unroll_written_out_by_hand(second_derivatives):
    """One unroll on a quadratic, float64: theta_{t+1} = theta_t + LSTM(grad f(theta_t)) with the
    analytic gradient 2 W^T (W theta - y), a constant unless second derivatives are asked for;
    the meta-loss is the mean of f(theta_0) .. f(theta_T)."""
    options = QuadraticLSTMOptimizer.Options(unroll=5, horizon=5, output_scale=0.1,
                                             second_derivatives=second_derivatives)
    torch.manual_seed(0)
    learner = QuadraticLSTMOptimizer(Quadratic().double(), options, LearnerContext(None, None, CPU, 0))
    learner.network.double()
    W, y = (t.double() for t in next(quadratics(torch.Generator().manual_seed(0))))
    learner.meta_optimizer.step = lambda: None  # keep the gradient, leave the weights
    for _ in range(5):
        learner.train_step((W, y))
    ours = [p.grad.clone() for p in learner.network.parameters()]

    model = Quadratic().double()
    reinitialise(model, OPTIMISEE_INIT.seed(0, 0))  # the learner's first optimisee
    theta, state, losses = model.theta.detach(), learner.network.initial_state(model.theta), []
    for _ in range(5):
        losses.append(((W @ theta - y) ** 2).sum())
        gradient = 2 * W.T @ (W @ theta - y)
        step, state = learner.network(gradient if second_derivatives else gradient.detach(), state)
        theta = theta + step
    losses.append(((W @ theta - y) ** 2).sum())
    reference = torch.autograd.grad(torch.stack(losses).mean(), list(learner.network.parameters()))
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.cat([g.flatten() for g in ours]).abs().sum() > 0


def test_each_optimisee_starts_from_its_own_reproducible_initialisation():
    options = QuadraticLSTMOptimizer.Options(unroll=2, horizon=2)
    a, b = (QuadraticLSTMOptimizer(Quadratic(), options, LearnerContext(None, None, CPU, 0)) for _ in "ab")
    problem = next(quadratics(torch.Generator().manual_seed(0)))
    starts = []
    for learner in (a, b):
        for _ in range(2):
            learner.train_step(problem)
            starts.append(learner.model.theta.detach().clone())
            learner.train_step(problem)
    assert torch.equal(starts[0], starts[2]) and torch.equal(starts[1], starts[3])
    assert not torch.equal(starts[0], starts[1])


def test_the_evaluated_model_is_the_latest_optimisee():
    options = QuadraticLSTMOptimizer.Options(unroll=2, horizon=4, output_scale=0.1)
    learner = QuadraticLSTMOptimizer(Quadratic(), options, LearnerContext(None, None, CPU, 0))
    problem = next(quadratics(torch.Generator().manual_seed(0)))
    for _ in range(7):
        learner.train_step(problem)
    start = learner.model.theta.detach().clone()  # the second optimisee's initialisation
    learner.end_task(0)
    assert torch.equal(learner.model.theta, learner.params["theta"].detach())
    assert not torch.equal(learner.model.theta, start)


def test_a_run_killed_mid_task_resumes_from_its_last_checkpoint_exactly(tiny_config, tmp_path,
                                                                       monkeypatch):
    """Checkpoints every 10 steps (2 unrolls, mid-optimisee): killed in step 25 of the first
    task, the resumed run trains its steps 20-29 only and ends as the uninterrupted run did."""
    config = load_config(tiny_config(
        learner={"name": "lstm_optimizer", "options": {"unroll": 5, "horizon": 15, "select_every": 1,
                                                       "select_trajectories": 2}},
        model={"name": "mlp", "options": {"hidden": [20], "activation": "sigmoid"}},
        protocol__steps_per_task=30, protocol__checkpoint_every=10))
    reference = run(config, run_dir=tmp_path / "reference")
    original, calls = LSTMOptimizer.train_step, {"n": 0, "kill_at": 25}

    def counted(self, batch):
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(LSTMOptimizer, "train_step", counted)
    with pytest.raises(KeyboardInterrupt):
        run(config, run_dir=tmp_path / "killed")
    calls.update(n=0, kill_at=None)
    resumed = run(config, run_dir=tmp_path / "killed", resume=True)
    assert calls["n"] == 10 + 4 * 30, "the resumed run did not start at step 20 of task 1"
    assert np.array_equal(resumed.accuracy, reference.accuracy)
    assert resumed.curves["loss"] == reference.curves["loss"]
    assert resumed.task_values == reference.task_values  # the selected rules' scores
    assert len(reference.task_values["selected_rule_loss"]) == 5


def test_horizon_must_hold_whole_unrolls():
    with pytest.raises(ValueError, match="multiple of unroll"):
        LSTMOptimizer.Options(unroll=20, horizon=50)


def test_a_checkpoint_inside_an_unroll_warns_that_resuming_will_differ():
    options = QuadraticLSTMOptimizer.Options(unroll=5, horizon=10)
    learner = QuadraticLSTMOptimizer(Quadratic(), options, LearnerContext(None, None, CPU, 0))
    problem = next(quadratics(torch.Generator().manual_seed(0)))
    for _ in range(5):
        learner.train_step(problem)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner.state_dict()  # between unrolls: exact, no warning
    learner.train_step(problem)
    with pytest.warns(UserWarning, match="multiple of learner.options.unroll"):
        learner.state_dict()


def test_selection_keeps_the_rule_with_the_lowest_held_out_final_loss():
    """Scores are paired (the same held-out optimisees every time), a worse rule scored later
    is not kept, and the task ends with the best rule."""
    options = QuadraticLSTMOptimizer.Options(unroll=5, horizon=10, lr=0.01, output_scale=0.1,
                                             select_every=2, select_trajectories=3)
    learner = QuadraticLSTMOptimizer(Quadratic(), options, LearnerContext(None, None, CPU, 0))
    training = quadratics(torch.Generator().manual_seed(0))
    selection_losses, scored_rules = [], []
    for _ in range(10 * 8):
        values = learner.train_step(next(training))
        if "selection_loss" in values:
            selection_losses.append(float(values["selection_loss"]))
            scored_rules.append({k: v.clone() for k, v in learner.network.state_dict().items()})
    assert [n for n, _ in learner.selections] == [2, 4, 6, 8]
    assert [score for _, score in learner.selections] == selection_losses
    assert learner.best_score == min(selection_losses)
    assert learner.selection_score() == learner.selection_score()  # paired and reproducible

    with torch.no_grad():  # a rule that moves every coordinate far: worse than any trained one
        learner.network.output.bias.fill_(100.0)
    assert learner._select() > learner.best_score
    learner.end_task(0)
    best = scored_rules[int(np.argmin(selection_losses))]
    assert all(torch.equal(v, best[k]) for k, v in learner.network.state_dict().items())
    assert learner.selection_score() == learner.best_score
    assert learner.report(0) == {"selected_rule_loss": learner.best_score}


def test_without_selection_the_task_ends_with_the_last_rule():
    options = QuadraticLSTMOptimizer.Options(unroll=5, horizon=10)
    learner = QuadraticLSTMOptimizer(Quadratic(), options, LearnerContext(None, None, CPU, 0))
    training = quadratics(torch.Generator().manual_seed(0))
    for _ in range(20):
        assert "selection_loss" not in learner.train_step(next(training))
    last = {k: v.clone() for k, v in learner.network.state_dict().items()}
    learner.end_task(0)
    assert all(torch.equal(v, last[k]) for k, v in learner.network.state_dict().items())
    assert learner.report(0) == {}
