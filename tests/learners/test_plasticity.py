"""EWC, online EWC, SI and MAS: the shared penalty, each importance estimator against a slow
per-example reference, the penalty's effect on forgetting, and resume."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import LearnerContext, get_learner
from metalearn.learners.ewc import log_likelihood
from metalearn.learners.mas import squared_output_norm
from metalearn.learners.plasticity import (
    QuadraticPenalty,
    per_example_gradients,
    summed_gradient_powers,
)
from metalearn.models import MLP
from metalearn.protocol import Protocol, ProtocolSettings
from metalearn.results import RunResults
from metalearn.tasks import Batch, ClassificationTask, LabelledImages, Scenario, Stream
from metalearn.tracking import Trackers

PLASTICITY = ["ewc", "online_ewc", "si", "mas"]


def random_batch(n=12, features=6, outputs=4, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.ones(n, outputs, dtype=torch.bool)
    allowed[: n // 2, -1] = False  # some examples compete over fewer outputs
    return Batch(torch.randn(n, features, generator=generator, dtype=dtype),
                 torch.randint(0, outputs - 1, (n,), generator=generator), allowed,
                 torch.zeros(n, dtype=torch.int64))


def looped_gradient_powers(model, objective, batch, targets, power):
    """The obvious reference: one backward pass per example."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in parameters]
    for n in range(len(batch)):
        value = objective(model(batch.x[n : n + 1]), batch.allowed[n : n + 1], targets[n : n + 1])
        gradients = torch.autograd.grad(value.sum(), parameters)
        total = [t + g.abs() ** power for t, g in zip(total, gradients)]
    return total


@pytest.mark.parametrize("objective,power", [(log_likelihood, 2), (squared_output_norm, 1)])
def test_gradient_powers_equal_a_per_example_loop(objective, power):
    torch.manual_seed(0)
    model = MLP(6, 4, hidden=(5, 3)).double()
    batch = random_batch()
    targets = torch.randint(0, 3, (len(batch),))
    reference = looped_gradient_powers(model, objective, batch, targets, power)
    parameters = list(model.parameters())
    fast = summed_gradient_powers(model, objective, batch, lambda logits, b: targets, power, parameters)
    vmapped = [g.abs().pow(power).sum(0) for g in
               per_example_gradients(model, objective, batch.x, batch.allowed, targets, parameters)]
    for r, f, v in zip(reference, fast, vmapped):
        torch.testing.assert_close(f, r, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(v, r, rtol=1e-12, atol=1e-14)


class ScaledLinear(torch.nn.Module):
    """A model the linear factorisation does not cover (a free scale parameter)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 4).double()
        self.scale = torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64))

    def forward(self, x):
        return self.scale * torch.tanh(self.linear(x))


def test_other_models_and_frozen_parameters_take_the_vmap_path_with_the_same_result():
    torch.manual_seed(0)
    batch = random_batch()
    targets = torch.randint(0, 3, (len(batch),))
    model = ScaledLinear()
    model.linear.bias.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    reference = looped_gradient_powers(model, log_likelihood, batch, targets, 2)
    got = summed_gradient_powers(model, log_likelihood, batch, lambda logits, b: targets, 2, trainable)
    assert len(got) == len(reference) == 2  # weight and scale: the frozen bias is left out
    for r, g in zip(reference, got):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-14)


def test_per_example_gradients_refuse_batch_statistics():
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4, track_running_stats=False))
    batch = random_batch(dtype=torch.float32)
    with pytest.raises(ValueError, match="BatchNorm1d normalises with batch statistics"):
        per_example_gradients(model.eval(), log_likelihood, batch.x, batch.allowed, batch.y,
                              list(model.parameters()))


def test_summed_penalties_equal_separate_penalties_in_value_and_gradient():
    torch.manual_seed(0)
    theta = [torch.randn(3, 4, dtype=torch.float64, requires_grad=True),
             torch.randn(5, dtype=torch.float64, requires_grad=True)]
    penalty = QuadraticPenalty(theta)
    terms = []
    for _ in range(3):
        with torch.no_grad():
            for p in theta:
                p.add_(torch.randn_like(p))
        importance = [torch.rand_like(p) * (torch.rand_like(p) > 0.3) for p in theta]
        terms.append(([i.clone() for i in importance], [p.detach().clone() for p in theta]))
        penalty.add_term(importance)
    with torch.no_grad():
        for p in theta:
            p.add_(torch.randn_like(p))
    separate = sum(((omega * (p - anchor) ** 2).sum() for importance, anchors in terms
                    for omega, p, anchor in zip(importance, theta, anchors)))
    expected_gradients = torch.autograd.grad(separate, theta)
    for p in theta:
        p.grad = torch.zeros_like(p)
    value = penalty.add_gradient_(scale=0.5)
    torch.testing.assert_close(value, 0.5 * separate.detach(), rtol=1e-10, atol=0)
    for p, expected in zip(theta, expected_gradients):
        torch.testing.assert_close(p.grad, 0.5 * expected, rtol=1e-10, atol=1e-12)


def test_reanchoring_decays_old_importance_and_moves_the_anchor():
    theta = [torch.tensor([1.0, 2.0], requires_grad=True)]
    penalty = QuadraticPenalty(theta)
    penalty.reanchor([torch.tensor([4.0, 0.0])])
    with torch.no_grad():
        theta[0].copy_(torch.tensor([3.0, 5.0]))
    penalty.reanchor([torch.tensor([1.0, 2.0])], decay=0.5)
    assert penalty.precision[0].tolist() == [3.0, 2.0]
    assert penalty.anchor[0].tolist() == [3.0, 5.0]
    with torch.no_grad():
        theta[0].copy_(torch.tensor([4.0, 5.0]))
    theta[0].grad = torch.zeros(2)
    assert float(penalty.add_gradient_(scale=1.0)) == 3.0  # 3 * (4 - 3)^2
    assert theta[0].grad.tolist() == [6.0, 0.0]


def conflicting_stream(n=512, seed=0):
    """Two domain-IL tasks on 4x4 images whose labels contradict each other (bright pixel 0
    means class 1 in task A and class 0 in task B): training on B overwrites A unless protected."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (2 * n, 4, 4), generator=generator, dtype=torch.uint8)
    bright = (images[:, 0, 0] > 127).long()
    halves = lambda labels: (LabelledImages(images[:n], labels[:n]),  # noqa: E731
                             LabelledImages(images[n:], labels[n:]))
    tasks = (ClassificationTask("A", 2, *halves(bright)), ClassificationTask("B", 2, *halves(1 - bright)))
    return Stream("conflict", tasks, frozenset(Scenario))


def make_learner(stream, learner_name, options, scenario=Scenario.DOMAIN, seed=0):
    torch.manual_seed(seed)
    learner_class = get_learner(learner_name)
    model = MLP(16, stream.n_outputs(scenario), hidden=(32,))
    return learner_class(model, learner_class.Options(**options),
                         LearnerContext(stream, scenario, torch.device("cpu"), seed))


def train_on(stream, learner_name, options, steps=300, scenario=Scenario.DOMAIN, seed=0):
    learner = make_learner(stream, learner_name, options, scenario, seed)
    settings = ProtocolSettings(steps_per_task=steps, batch_size=32, log_every=50)
    results = RunResults.empty("conflict", learner_name, scenario.value, seed,
                               [t.name for t in stream], [len(t.test) for t in stream], episodic=False)
    return Protocol(stream, scenario, learner, settings, seed, Trackers([])), results, learner


STRONG = {"ewc": 1e4, "online_ewc": 1e4, "si": 100.0, "mas": 100.0}


@pytest.mark.parametrize("name", PLASTICITY)
def test_a_strong_penalty_keeps_the_first_task_where_none_forgets(name, tmp_path):
    stream = conflicting_stream()
    accuracy = {}
    for strength in (0.0, STRONG[name]):
        protocol, results, _ = train_on(stream, name, {"lr": 0.003, "strength": strength})
        protocol.run(results, tmp_path / f"{name}-{strength}")
        assert results.accuracy[0, 0] > 0.9  # task A was learned
        accuracy[strength] = results.accuracy[1, 0]
    assert accuracy[0.0] < 0.2, "without the penalty task B should overwrite task A"
    assert accuracy[STRONG[name]] > 0.8, f"{name}'s penalty did not protect task A"


def test_ewc_fisher_matches_a_per_example_loop_for_each_label_choice():
    stream = conflicting_stream(n=64)
    for fisher in ("empirical", "predicted"):
        learner = make_learner(stream, "ewc", {"fisher": fisher})
        data = next(stream.ordered_batches(Scenario.DOMAIN, 0, 10**6, seen=1, split="train"))
        logits = learner.model(data.x).detach()
        labels = data.y if fisher == "empirical" else logits.argmax(1)
        reference = looped_gradient_powers(learner.model, log_likelihood, data, labels, 2)
        for r, f in zip(reference, learner.importance(0)):
            torch.testing.assert_close(f, r / len(data), rtol=1e-4, atol=1e-9)


def test_sampled_fisher_approaches_the_expected_fisher():
    """The true Fisher averages over labels drawn from the model: with many copies of a few
    inputs the sampled estimate converges to sum_c p(c|x) g_c^2."""
    images = torch.randint(0, 256, (4, 4, 4), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8).repeat(2000, 1, 1)
    data = LabelledImages(images, torch.zeros(len(images), dtype=torch.int64))
    stream = Stream("copies", (ClassificationTask("copies", 3, data, data),), frozenset(Scenario))
    learner = make_learner(stream, "ewc", {"fisher": "sampled"}, scenario=Scenario.CLASS)
    sampled = learner.importance(0)
    few = next(stream.ordered_batches(Scenario.CLASS, 0, 4, seen=1, split="train"))
    probabilities = F.softmax(learner.model(few.x), 1).detach()
    expected = [torch.zeros_like(p) for p in learner.model.parameters()]
    for n in range(4):
        single = Batch(few.x[n : n + 1], few.y[n : n + 1], few.allowed[n : n + 1], few.task_ids[n : n + 1])
        for label in range(3):
            squared = looped_gradient_powers(learner.model, log_likelihood, single, torch.tensor([label]), 2)
            expected = [e + probabilities[n, label] * s / 4 for e, s in zip(expected, squared)]
    for s, e in zip(sampled, expected):
        assert float((s - e).norm() / e.norm()) < 0.08


def test_si_importance_is_the_path_integral_of_a_plain_replay_of_training():
    stream = conflicting_stream(n=64)
    learner = make_learner(stream, "si", {"lr": 0.01, "strength": 0.0, "damping": 0.1})
    start = copy.deepcopy(learner.model)
    optimizer = torch.optim.Adam(start.parameters(), lr=0.01)
    optimizer.load_state_dict(learner.optimizer.state_dict())
    generator = torch.Generator().manual_seed(3)
    batches = list(zip(range(20), stream.train_batches(Scenario.DOMAIN, [0], 16, generator, seen=1)))
    learner.begin_task(0)
    reference_w = [torch.zeros_like(p) for p in start.parameters()]
    initial = [p.detach().clone() for p in start.parameters()]
    for _, batch in batches:
        learner.train_step(batch)
        before = [p.detach().clone() for p in start.parameters()]
        loss = F.cross_entropy(start(batch.x), batch.y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        reference_w = [w - p.grad * (p.detach() - b) for w, p, b in zip(reference_w, start.parameters(), before)]
    expected = [w / ((p.detach() - i) ** 2 + 0.1) for w, p, i in zip(reference_w, start.parameters(), initial)]
    for got, want in zip(learner.importance(0), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_mas_importance_is_the_mean_absolute_gradient_of_the_squared_output_norm():
    stream = conflicting_stream(n=64)
    learner = make_learner(stream, "mas", {})
    data = next(stream.ordered_batches(Scenario.DOMAIN, 0, 10**6, seen=1, split="train"))
    reference = looped_gradient_powers(learner.model, squared_output_norm, data, data.y, 1)
    for r, f in zip(reference, learner.importance(0)):
        torch.testing.assert_close(f, r / len(data), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("name", PLASTICITY)
def test_resume_after_a_kill_in_task_three_gives_the_uninterrupted_result(name, tiny_config, tmp_path,
                                                                         killed_and_resumed):
    options = {"strength": STRONG[name]}
    config = load_config(tiny_config(learner={"name": name, "options": options},
                                     scenario="domain", protocol__steps_per_task=30))
    reference = run(config, run_dir=tmp_path / "reference")
    unprotected = run(load_config(tiny_config(learner={"name": name, "options": {"strength": 0.0}},
                                              scenario="domain", protocol__steps_per_task=30)),
                      run_dir=tmp_path / "unprotected")
    assert not np.array_equal(reference.accuracy, unprotected.accuracy)  # the penalty shows in R

    resumed = killed_and_resumed(config)
    assert np.array_equal(resumed.accuracy, reference.accuracy)
