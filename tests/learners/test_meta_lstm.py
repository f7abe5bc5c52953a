"""Meta-LSTM: SGD as a special case, the start as gradient descent, the meta-gradient against a
hand-written float64 reference (detached learner gradients), resume, option checks, and a short
Omniglot run that must beat chance and its own untrained start."""

import copy
import math

import pydantic
import pytest
import torch
import torch.nn.functional as F

from metalearn.learners import LearnerContext
from metalearn.learners.coordinatewise import flatten, log_and_sign
from metalearn.learners.meta_lstm import MetaLearnerCell, MetaLSTM, MetaLSTMOptions
from metalearn.models import MLP, Conv4

from test_maml import omniglot, random_episodes, short_omniglot_run  # noqa: F401  (a fixture)

CPU = torch.device("cpu")


def tiny_learner(seed=0, **options):
    """An MLP on 6x6 inputs, 3 classes, float64: small enough for hand-written references."""
    torch.manual_seed(seed)
    model = MLP(36, 3, hidden=(5,)).double()
    return MetaLSTM(model, MetaLSTM.Options(**options), LearnerContext(None, None, CPU, seed))


def episodes(n_episodes=2):
    return random_episodes(n_episodes=n_episodes, n_way=3, k_shot=2, q_query=2, size=6)


def test_gates_fixed_at_one_and_lr_give_plain_sgd():
    """W_F = W_I = 0, b_F = 50 (sigmoid is exactly 1 in float64), b_I = logit(lr): the inner
    loop is SGD at lr, checked against torch.optim.SGD on a copy of the model."""
    learner, lr, steps = tiny_learner(), 0.3, 4
    with torch.no_grad():
        learner.cell.forget.weight.zero_()
        learner.cell.forget.bias.fill_(50.0)
        learner.cell.input.weight.zero_()
        learner.cell.input.bias.fill_(math.log(lr / (1 - lr)))
    batch = episodes(1)
    x, y = batch.support_x[0], batch.support_y[0]
    model = copy.deepcopy(learner.model)
    sgd = torch.optim.SGD(model.parameters(), lr=lr)
    for steps_done in range(1, steps + 1):
        sgd.zero_grad()
        F.cross_entropy(model(x), y).backward()
        sgd.step()
        ours = learner.adapt(learner.functional.parameters(), x, y, steps_done)
        for name, p in model.named_parameters():
            torch.testing.assert_close(ours[name], p, rtol=0, atol=1e-12)


def test_default_initialisation_starts_as_gradient_descent():
    """With the default bias ranges the first update keeps the parameters (f in (0.97, 1)) and
    steps along -g with a rate between sigmoid(-5) and sigmoid(-4), give or take the small W."""
    learner = tiny_learner()
    batch = episodes(1)
    params = {k: v.detach() for k, v in learner.functional.parameters().items()}
    gradients, loss = learner.functional.gradient(params, batch.support_x[0], batch.support_y[0])
    c, g = flatten(params), flatten(gradients)
    with torch.no_grad():
        _, (_, f, i) = learner.cell(c, g, loss, (None, torch.zeros_like(c), torch.zeros_like(c)))
    assert 0.97 < float(f.min()) and float(f.max()) < 1.0
    sigmoid = torch.sigmoid(torch.tensor([-5.3, -3.7], dtype=torch.float64))
    assert float(sigmoid[0]) < float(i.min()) and float(i.max()) < float(sigmoid[1])
    assert float(i.std()) > 0  # the gates do see their inputs


def reference_meta_gradient(learner, batch, steps, detach_gradients=True):
    """The paper's equations by plain autograd, one episode at a time, with torch's own
    nn.LSTMCell and explicit gate arithmetic; the learner's gradient is a constant (detached)
    unless ``detach_gradients`` is False (then its second derivatives enter the meta-gradient)."""
    cell, names = learner.cell, [name for name, _ in learner.model.named_parameters()]
    theta = [p.detach().requires_grad_() for p in learner.model.parameters()]
    weights = [w.detach().requires_grad_() for w in cell.parameters()]
    w_ih, w_hh, b_ih, b_hh, w_f, b_f, w_i, b_i = weights
    sizes = [p.numel() for p in theta]

    def loss_at(flat, x, y):
        params = {n: piece.view_as(p) for n, piece, p in zip(names, flat.split(sizes), theta)}
        return F.cross_entropy(torch.func.functional_call(learner.model, params, (x,)), y)

    total = 0.0
    for e in range(len(batch)):
        x, y = batch.support_x[e], batch.support_y[e]
        c = torch.cat([p.reshape(-1) for p in theta])
        f = i = torch.zeros_like(c)
        h = cell_state = torch.zeros(len(c), cell.lstm.hidden_size, dtype=c.dtype)
        for _ in range(steps):
            at = c.detach().requires_grad_() if detach_gradients else c
            loss = loss_at(at, x, y)
            (g,) = torch.autograd.grad(loss, at, create_graph=not detach_gradients)
            if detach_gradients:
                loss, g = loss.detach(), g.detach()
            inputs = torch.cat([log_and_sign(g), log_and_sign(loss).expand(len(g), 2)], dim=1)
            h, cell_state = torch.lstm_cell(inputs, (h, cell_state), w_ih, w_hh, b_ih, b_hh)
            f = torch.sigmoid(h @ w_f[0, :-2] + w_f[0, -2] * c + w_f[0, -1] * f + b_f)
            i = torch.sigmoid(h @ w_i[0, :-2] + w_i[0, -2] * c + w_i[0, -1] * i + b_i)
            c = f * c - i * g
        total = total + loss_at(c, batch.query_x[e], batch.query_y[e]) / len(batch)
    return list(torch.autograd.grad(total, theta + weights))


def meta_gradient(learner, batch):
    learner.optimizer.zero_grad()
    learner.meta_gradient(batch)
    return [p.grad.clone() for p in learner.meta_parameters()]


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_meta_gradient_equals_a_hand_written_reference_with_detached_learner_gradients(batching):
    batch, steps = episodes(), 3
    learner = tiny_learner(grad_clip=None, inner_steps=steps, batching=batching)
    with torch.no_grad():  # gate weights large enough that every path matters
        for gate in (learner.cell.forget, learner.cell.input):
            gate.weight.uniform_(-0.5, 0.5)
    ours = meta_gradient(learner, batch)
    names = [n for n, _ in learner.model.named_parameters()] + \
            [f"cell.{n}" for n, _ in learner.cell.named_parameters()]
    for name, g in zip(names, ours, strict=True):
        assert torch.isfinite(g).all() and g.abs().max() > 0, name  # reaches every meta-parameter
    expected = reference_meta_gradient(learner, batch, steps)
    for a, e in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)
    second_order = reference_meta_gradient(learner, batch, steps, detach_gradients=False)
    difference = max(float((s - e).norm() / e.norm()) for s, e in zip(second_order, expected))
    assert difference > 1e-3  # the check above would see second-order terms


def test_meta_gradient_norm_is_clipped():
    learner = tiny_learner(grad_clip=1e-3, inner_steps=2)
    gradients = meta_gradient(learner, episodes())
    norm = float(torch.cat([g.flatten() for g in gradients]).norm())
    assert abs(norm - 1e-3) < 1e-8  # clip_grad_norm_ divides by (norm + 1e-6)


def test_state_dict_resumes_exactly():
    batch = episodes()
    learner = tiny_learner(inner_steps=2)
    for _ in range(2):
        learner.train_step(batch)
    resumed = tiny_learner(seed=5, inner_steps=2)
    resumed.load_state_dict(copy.deepcopy(learner.state_dict()))
    learner.train_step(batch)
    resumed.train_step(batch)
    for a, b in zip(learner.meta_parameters(), resumed.meta_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("options", [
    {"input_bias": (-4.0, -5.0)}, {"hidden": 0}, {"grad_clip": 0.0}, {"inner_lr": 0.1},
])
def test_bad_options_are_refused(options):
    with pytest.raises(pydantic.ValidationError):
        MetaLSTMOptions(**options)


def test_short_omniglot_training_beats_chance_and_its_untrained_start(omniglot, tmp_path):
    """5-way 1-shot, Conv4 with 8 filters, 5 inner steps, 150 iterations of meta-batch 2
    (about 15 s on one CPU core). The start is the untrained meta-learner: SGD-like small
    steps from a random initialisation."""
    torch.manual_seed(0)
    learner = MetaLSTM(Conv4(5, hidden=8), MetaLSTM.Options(inner_steps=5, eval_inner_steps=5,
                                                            lr=0.005),
                       LearnerContext(None, None, CPU, 0))
    before, after = short_omniglot_run(omniglot, learner, steps=150, meta_batch_size=2,
                                       run_dir=tmp_path)
    assert after > 0.5 and after > before + 0.15, (before, after)
