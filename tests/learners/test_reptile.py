"""Reptile: its update against a hand-computed softmax regression, the annealed outer step,
minibatch order, vmap against the loop, resume, and a short Omniglot run."""

import copy

import numpy as np
import pytest
import torch

from metalearn.learners import LearnerContext
from metalearn.learners.reptile import INNER_BATCHES, Reptile, minibatch_indices
from metalearn.models import MLP, Conv4

from test_maml import omniglot, random_episodes, short_omniglot_run  # noqa: F401  (a fixture)

CPU = torch.device("cpu")


def build(model, seed=0, **options):
    return Reptile(model, Reptile.Options(**options), LearnerContext(None, None, CPU, seed))


def softmax_regression_gradient(w, b, x, y):
    """d/d(w, b) of the mean cross-entropy of softmax(x w^T + b), by hand."""
    logits = x @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    p /= len(y)
    return p.T @ x, p.sum(0)


def hand_reptile_step(w, b, x, y, batches, options, epsilon, state):
    """One Reptile iteration for softmax regression, NumPy only; ``state`` is the inner Adam's
    (moments, squares, steps taken), carried from episode to episode unless it is fresh."""
    adapted = []
    beta1, beta2 = options["betas"]
    for episode in range(len(x)):
        phi = [w.copy(), b.copy()]
        if options["inner_state"] == "fresh":
            state = ([np.zeros_like(t) for t in phi], [np.zeros_like(t) for t in phi], 0)
        moments, squares, steps = state
        for index in batches[episode]:
            gradients = softmax_regression_gradient(*phi, x[episode][index], y[episode][index])
            steps += 1
            for k, g in enumerate(gradients):
                if options["inner_optimizer"] == "sgd":
                    phi[k] = phi[k] - options["inner_lr"] * g
                    continue
                moments[k] = beta1 * moments[k] + (1 - beta1) * g
                squares[k] = beta2 * squares[k] + (1 - beta2) * g**2
                m_hat, v_hat = moments[k] / (1 - beta1**steps), squares[k] / (1 - beta2**steps)
                phi[k] = phi[k] - options["inner_lr"] * m_hat / (np.sqrt(v_hat) + 1e-8)
        state = (moments, squares, steps)
        adapted.append(phi)
    return [theta + epsilon * (np.mean([phi[k] for phi in adapted], 0) - theta)
            for k, theta in enumerate((w, b))], state


@pytest.mark.parametrize("inner_optimizer,betas,inner_state", [
    ("adam", (0.0, 0.999), "carried"), ("adam", (0.9, 0.99), "carried"),
    ("adam", (0.0, 0.999), "fresh"), ("sgd", (0.0, 0.999), "carried")])
def test_two_iterations_equal_a_hand_computed_softmax_regression(inner_optimizer, betas, inner_state):
    """Two iterations of two episodes, so a carried Adam state runs across episodes and across
    iterations."""
    options = {"inner_optimizer": inner_optimizer, "betas": betas, "inner_lr": 0.05,
               "inner_steps": 3, "inner_batch_size": 4, "train_shots": 3, "meta_step": 0.7,
               "meta_step_final": 0.1, "anneal_steps": 10, "inner_state": inner_state}
    batch = random_episodes(n_episodes=2, n_way=3, k_shot=1, q_query=3, size=2)
    torch.manual_seed(0)
    learner = build(MLP(4, 3, hidden=()).double(), **options)
    w, b = (p.detach().numpy().copy() for p in learner.model.parameters())
    # each class's first 3 examples, support first: the support shot and two queries
    x = np.stack([np.concatenate([
        np.concatenate([batch.support_x[e, c:c + 1], batch.query_x[e, 3 * c:3 * c + 2]])
        for c in range(3)]).reshape(9, 4) for e in range(2)])
    y = np.repeat(np.arange(3), 3)[None].repeat(2, 0)
    generator = INNER_BATCHES.generator(0)
    state = ([np.zeros_like(w), np.zeros_like(b)], [np.zeros_like(w), np.zeros_like(b)], 0)
    for epsilon in (0.7, 0.64):
        batches = minibatch_indices(2, 9, 3, 4, generator).numpy()
        (w, b), state = hand_reptile_step(w, b, x, y, batches, options, epsilon, state)
        learner.train_step(batch)
        for p, e in zip(learner.model.parameters(), (w, b), strict=True):
            np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-12, atol=1e-14)


def test_test_episodes_start_from_the_carried_adam_state_and_leave_it():
    batch = random_episodes(n_episodes=2, n_way=3, k_shot=1, q_query=3, size=2)
    options = {"train_shots": None, "inner_steps": 3, "eval_inner_steps": 3, "eval_inner_batch_size": 2}
    carried = build(MLP(4, 3, hidden=(5,)).double(), **options)
    carried.train_step(batch)
    fresh = build(MLP(4, 3, hidden=(5,)).double(), inner_state="fresh", **options)
    fresh.load_state_dict(copy.deepcopy(carried.state_dict()))
    state = copy.deepcopy(carried.inner_state)
    assert state.step == 2 * 3  # two episodes of three training steps
    logits = carried.predict_episodes(batch)
    assert carried.inner_state.step == state.step
    for name in state.squares:
        assert torch.equal(carried.inner_state.squares[name], state.squares[name])
    assert not torch.allclose(logits, fresh.predict_episodes(batch))  # the state matters


def test_outer_step_anneals_linearly_and_is_applied():
    batch = random_episodes(n_episodes=2, n_way=3, k_shot=1, q_query=3, size=2)
    learner = build(MLP(4, 3, hidden=()).double(), meta_step=1.0, meta_step_final=0.0,
                    anneal_steps=4, train_shots=None, inner_lr=0.1)
    steps = []
    for _ in range(6):
        before = [p.detach().clone() for p in learner.model.parameters()]
        steps.append(float(learner.train_step(batch)["meta_step"]))
        moved = any(not torch.equal(a, p) for a, p in zip(before, learner.model.parameters()))
        assert moved == (steps[-1] > 0)
    assert steps == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_minibatches_are_shuffled_passes_over_the_examples():
    indices = minibatch_indices(3, 5, steps=4, batch_size=3, generator=torch.Generator().manual_seed(0))
    assert indices.shape == (3, 4, 3)
    flat = indices.flatten(1)
    for episode in flat:  # 12 draws: two whole passes over the 5 examples, then 2 of a third
        assert sorted(episode[:5].tolist()) == sorted(episode[5:10].tolist()) == list(range(5))
        assert len(set(episode[10:].tolist())) == 2


def test_train_shots_beyond_the_episode_are_refused():
    batch = random_episodes(n_episodes=2, n_way=3, k_shot=1, q_query=2, size=2)
    learner = build(MLP(4, 3, hidden=()).double(), train_shots=4)
    with pytest.raises(ValueError, match="raise q_query or lower train_shots"):
        learner.train_step(batch)


@pytest.mark.parametrize("transductive", [True, False])
def test_vmapped_and_looped_meta_batches_agree(transductive):
    batch = random_episodes(n_episodes=3, n_way=5, k_shot=1, q_query=3, size=28, dtype=torch.float32)
    torch.manual_seed(0)
    model = Conv4(5, hidden=8)
    # SGD: Adam's first steps are lr * sign(gradient), which turns the rounding noise in the zero
    # gradients of the convolution biases (cancelled by BatchNorm) into whole steps.
    options = {"inner_optimizer": "sgd", "inner_steps": 3, "train_shots": 4, "inner_lr": 0.1,
               "eval_inner_steps": 4, "transductive": transductive}
    batched = build(model, batching="vmap", **options)
    looped = build(copy.deepcopy(model), batching="loop", **options)
    for learner in (batched, looped):
        learner.train_step(batch)
    for a, b in zip(batched.model.parameters(), looped.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched.predict_episodes(batch), looped.predict_episodes(batch),
                               rtol=1e-4, atol=1e-5)


def test_state_dict_resumes_exactly():
    batch = random_episodes(n_episodes=2, n_way=3, k_shot=1, q_query=3, size=2)
    learner = build(MLP(4, 3, hidden=(5,)).double(), anneal_steps=10, train_shots=None)
    learner.train_step(batch)
    resumed = build(MLP(4, 3, hidden=(5,)).double(), anneal_steps=10, train_shots=None, seed=3)
    resumed.load_state_dict(copy.deepcopy(learner.state_dict()))
    assert resumed.meta_step_size() == learner.meta_step_size()
    learner.train_step(batch)
    resumed.train_step(batch)
    for a, b in zip(learner.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_short_omniglot_training_beats_chance_and_fine_tuning_from_random_init(omniglot, tmp_path):
    """5-way 1-shot, transductive, 200 iterations of meta-batch 5 with a larger inner step than
    the paper's (about 25 s on 2 CPU cores); the initial accuracy is the random initialisation
    adapted with the same 10 test-time steps (seed 0: 48% before, 72% after)."""
    torch.manual_seed(0)
    learner = build(Conv4(5, hidden=32), inner_steps=5, inner_batch_size=10, inner_lr=0.01,
                    train_shots=6, anneal_steps=200, eval_inner_steps=10, transductive=True,
                    batching="vmap")
    before, after = short_omniglot_run(omniglot, learner, steps=200, meta_batch_size=5,
                                       run_dir=tmp_path)
    assert after > 0.65 and after > before + 0.15, (before, after)
