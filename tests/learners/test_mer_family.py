"""The rehearsal learners of the MER protocol: the reservoir keeps a uniform sample, A-GEM's
projection, MER's and La-MAML's updates against hand computations on a linear model, the MER
streams (a subset per task, GEM's angles), and runs through the whole protocol."""

import numpy as np
import pytest
import torch

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import LearnerContext, get_learner
from metalearn.learners.agem import project
from metalearn.learners.replay import ReservoirBuffer
from metalearn.models import MLP
from metalearn.tasks import (
    Batch,
    ClassificationTask,
    LabelledImages,
    Scenario,
    Stream,
    permuted_mnist,
    rotated_mnist,
)


def test_the_reservoir_keeps_every_offered_example_with_equal_probability():
    """100 examples offered to a buffer of 10, 1000 times: each should be kept with
    probability 1/10. A chi-square statistic over the 100 inclusion counts (about 99 +- 14 if
    uniform) catches a buffer that favours early or late examples."""
    generator = torch.Generator().manual_seed(0)
    offered, capacity, trials = 100, 10, 1000
    counts = torch.zeros(offered)
    examples = torch.arange(offered)
    for _ in range(trials):
        buffer = ReservoirBuffer(capacity)
        for start in range(0, offered, 10):  # in minibatches, as the learners offer them
            part = examples[start:start + 10]
            buffer.add(part.float().view(-1, 1), part, torch.zeros_like(part), generator)
        assert len(buffer) == capacity and len(set(buffer.y.tolist())) == capacity
        counts[buffer.y] += 1
    expected = trials * capacity / offered
    chi_square = ((counts - expected) ** 2 / (expected * (1 - capacity / offered))).sum()
    assert chi_square < 99 + 4 * 14, chi_square
    # the first and last tenth are kept as often as the rest (3 standard deviations: 10 %)
    assert abs(counts[:10].mean() - expected) < 0.1 * expected
    assert abs(counts[-10:].mean() - expected) < 0.1 * expected


def test_agem_projection_by_hand():
    g, r = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    # g.r = -1, r.r = 2: g - (-1/2) r = (0.5, 0.5)
    assert torch.allclose(project(g, r), torch.tensor([0.5, 0.5]))
    aligned = torch.tensor([1.0, 2.0])
    assert project(aligned, r) is aligned  # g.r >= 0: unchanged


def test_agem_projection_has_no_negative_dot_product_with_the_reference():
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        g, r = torch.randn(2, 50, generator=generator, dtype=torch.float64)
        projected = project(g, r)
        if g @ r < 0:
            assert torch.allclose(projected, g - (g @ r) / (r @ r) * r)
            assert projected @ r >= -1e-12
        else:
            assert torch.equal(projected, g)


def toy_stream() -> Stream:
    images = torch.randint(0, 256, (6, 2, 2), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    data = LabelledImages(images, torch.arange(6) % 3)
    return Stream("toy", tuple(ClassificationTask(f"t{t}", 3, data, data) for t in range(2)),
                  frozenset(Scenario))


def linear_learner(name, **options):
    """A learner on a linear model (4 inputs, 3 outputs), in float64, about to train on task 0."""
    torch.manual_seed(3)
    stream = toy_stream()
    context = LearnerContext(stream, Scenario.DOMAIN, torch.device("cpu"), seed=0)
    learner_class = get_learner(name)
    learner = learner_class(MLP(4, 3, hidden=()).double(), learner_class.Options(**options), context)
    learner.begin_task(0)
    return learner


def example(x, label) -> Batch:
    return Batch(x.view(1, 1, 2, 2), torch.tensor([label]), torch.ones(1, 3, dtype=torch.bool),
                 torch.tensor([0]))


def cross_entropy_gradient(W, b, x, label):
    """Hand gradient of -log softmax(W x + b)[label]: (p - onehot) x^T and p - onehot."""
    p = torch.softmax(W @ x + b, 0)
    p[label] -= 1
    return torch.outer(p, x), p


def test_mer_update_against_a_hand_reference():
    """s = 2 batches of [example, memory], SGD on each in turn, Reptile beta within each batch
    and gamma across them."""
    learner = linear_learner("mer", lr=0.3, beta=0.4, gamma=0.6, batches_per_example=2,
                             memories=1, replay_batch_size=1)
    x_new, x_old = torch.rand(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    learner.remember(example(x_old, 2))
    W, b = (p.detach().clone() for p in learner.model.head.parameters())

    start = (W, b)
    for _ in range(2):
        batch_start = (W, b)
        for x, label in ((x_new, 1), (x_old, 2)):
            dW, db = cross_entropy_gradient(W, b, x, label)
            W, b = W - 0.3 * dW, b - 0.3 * db
        W, b = (s + 0.4 * (now - s) for s, now in zip(batch_start, (W, b)))
    W, b = (s + 0.6 * (now - s) for s, now in zip(start, (W, b)))

    learner.train_step(example(x_new, 1))
    assert torch.allclose(learner.model.head.weight, W, atol=1e-12)
    assert torch.allclose(learner.model.head.bias, b, atol=1e-12)


def test_lamaml_update_against_a_hand_reference_with_rates_clipped_at_zero():
    """One glance, one incoming example, one memory: the look-ahead step at max(0, alpha), the
    meta-loss on [example, memory], first-order gradients to the weights and the rates; the
    rates step first, then the weights by max(0, new alpha). Rates set negative freeze their
    weights and get no gradient."""
    learner = linear_learner("lamaml", glances=1, memories=1, replay_batch_size=1,
                             alpha_init=0.2, rates_lr=0.5, grad_clip_norm=1e6)
    with torch.no_grad():
        learner.rates[0][0] = -0.1  # the first output's weights
        learner.rates[1][2] = -0.3  # the third output's bias
    x_new, x_old = torch.rand(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    learner.remember(example(x_old, 0))
    W, b = (p.detach().clone() for p in learner.model.head.parameters())
    aW, ab = (r.detach().clone() for r in learner.rates)

    gW, gb = cross_entropy_gradient(W, b, x_new, 2)
    fast_W, fast_b = W - aW.clamp(min=0) * gW, b - ab.clamp(min=0) * gb
    meta = [cross_entropy_gradient(fast_W, fast_b, x, label) for x, label in ((x_new, 2), (x_old, 0))]
    mW, mb = (meta[0][0] + meta[1][0]) / 2, (meta[0][1] + meta[1][1]) / 2
    # d meta / d alpha = -(inner gradient) * d meta / d fast, where alpha > 0
    new_aW = aW - 0.5 * (-gW * mW * (aW > 0))
    new_ab = ab - 0.5 * (-gb * mb * (ab > 0))
    new_W, new_b = W - new_aW.clamp(min=0) * mW, b - new_ab.clamp(min=0) * mb

    learner.train_step(example(x_new, 2))
    assert torch.allclose(learner.rates[0], new_aW, atol=1e-12)
    assert torch.allclose(learner.rates[1], new_ab, atol=1e-12)
    assert torch.allclose(learner.model.head.weight, new_W, atol=1e-12)
    assert torch.allclose(learner.model.head.bias, new_b, atol=1e-12)
    # clipped at zero: the frozen weights did not move, their rates did not change
    assert torch.equal(learner.model.head.weight[0], W[0])
    assert learner.model.head.bias[2] == b[2]
    assert torch.equal(learner.rates[0][0], aW[0]) and learner.rates[1][2] == ab[2]
    assert not torch.equal(learner.model.head.weight[1], W[1])


def test_mer_streams_train_each_task_on_its_own_subset(data_root):
    stream = permuted_mnist(n_tasks=3, identity_first=False, train_samples_per_task=50,
                            data_root=data_root)
    again = permuted_mnist(n_tasks=3, identity_first=False, train_samples_per_task=50,
                           data_root=data_root)
    sizes = [len(task.train) for task in stream]
    assert sizes == [50, 50, 50]
    assert not torch.equal(stream[0].train.images, stream[1].train.images)
    assert all(torch.equal(a.train.images, b.train.images) for a, b in zip(stream, again))
    # the subsets do not change the permutations
    full = permuted_mnist(n_tasks=3, identity_first=False, data_root=data_root)
    assert all(torch.equal(a.transform.permutation, b.transform.permutation)
               for a, b in zip(stream, full))
    with pytest.raises(ValueError, match="train_samples_per_task"):
        permuted_mnist(n_tasks=2, train_samples_per_task=0, data_root=data_root)


def test_gem_angles_fall_one_in_each_bin_of_180_over_t_degrees(data_root):
    stream = rotated_mnist(n_tasks=20, angles="gem", seed=0, train_samples_per_task=10,
                           data_root=data_root)
    angles = [task.transform.degrees for task in stream]
    assert all(9 * t <= angle < 9 * (t + 1) for t, angle in enumerate(angles))
    assert len({round(angle % 9, 6) for angle in angles}) == 20  # drawn, not evenly spaced
    with pytest.raises(ValueError, match="'even' or 'gem'"):
        rotated_mnist(n_tasks=2, angles="uniform", data_root=data_root)


SMALL = {"er": {"memories": 50},
         "agem": {"memories": 50, "reference_batch_size": 20},
         "mer": {"memories": 50, "batches_per_example": 1, "replay_batch_size": 5},
         "lamaml": {"memories": 50, "glances": 1}}


def forgetting(tiny_config, learner, options, steps):
    config = load_config(tiny_config(learner={"name": learner, "options": options},
                                     scenario="domain", protocol__steps_per_task=steps,
                                     protocol__batch_size=10))
    results = run(config)
    assert results.accuracy.shape == (5, 5)
    return results.metrics["forgetting"]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_runs_through_the_protocol(name, tiny_config):
    forgetting(tiny_config, name, SMALL[name], steps=3)


@pytest.mark.slow
def test_each_forgets_less_than_with_one_memory(tiny_config):
    """Domain-IL Split MNIST: each learner's replay leaves it less forgetful than ER with a
    memory of one example."""
    one_memory = forgetting(tiny_config, "er", {"memories": 1, "replay_batch_size": 1}, steps=30)
    for name, options in SMALL.items():
        assert forgetting(tiny_config, name, options, steps=30) < one_memory - 0.05, name


@pytest.mark.slow
def test_lamaml_resumes_after_a_kill_in_task_three_with_the_uninterrupted_result(
        tiny_config, tmp_path, killed_and_resumed):
    config = load_config(tiny_config(learner={"name": "lamaml", "options": {"memories": 30, "glances": 1}},
                                     scenario="domain", protocol__steps_per_task=20,
                                     protocol__batch_size=10))
    reference = run(config, run_dir=tmp_path / "reference")
    assert np.array_equal(killed_and_resumed(config).accuracy, reference.accuracy)
