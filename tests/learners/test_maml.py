"""MAML, FOMAML and Meta-SGD: meta-gradients against `higher` and hand-written references in
float64, vmap against the loop, BatchNorm semantics, no memory carried across steps, resume,
and a short Omniglot run that must beat fine-tuning from a random initialisation."""

import copy
import gc
import warnings

import higher
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metalearn.learners import LearnerContext
from metalearn.learners.inner_loop import resolve_batching
from metalearn.learners.maml import MAML
from metalearn.learners.meta_sgd import MetaSGD
from metalearn.models import MLP, Conv4
from metalearn.protocol import Protocol, ProtocolSettings
from metalearn.protocol.checkpoint import load_checkpoint
from metalearn.results import RunResults
from metalearn.tasks import EpisodeBatch, omniglot_few_shot
from metalearn.tracking import Trackers

CPU = torch.device("cpu")


def random_episodes(n_episodes=3, n_way=3, k_shot=2, q_query=2, size=12, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def part(per_class):
        x = torch.rand(n_episodes, n_way * per_class, 1, size, size, generator=generator, dtype=dtype)
        return x, torch.arange(n_way).repeat_interleave(per_class).expand(n_episodes, -1)

    return EpisodeBatch(*part(k_shot), *part(q_query))


def small_model(kind, n_way=3, size=12, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = Conv4(n_way, hidden=4) if kind == "conv4" else MLP(size * size, n_way, hidden=(8,))
    return model.to(dtype)


def build(cls, model, seed=0, **options):
    return cls(model, cls.Options(**options), LearnerContext(None, None, CPU, seed))


def meta_gradient(learner, batch):
    learner.optimizer.zero_grad()
    learner.meta_gradient(batch)
    return [p.grad.clone() for p in learner.meta_parameters()]


def assert_relative(actual, expected, tolerance):
    """Each parameter's error, relative to the whole gradient's norm (the biases of convolutions
    before BatchNorm have a zero gradient, so their own norm is rounding noise)."""
    scale = torch.cat([e.flatten() for e in expected]).norm()
    for a, e in zip(actual, expected, strict=True):
        assert float((a - e).norm() / scale) < tolerance


def higher_meta_gradient(model, batch, steps, lrs):
    """The reference: `higher`'s differentiable SGD, one episode at a time, one parameter group
    per parameter so that each may have its own (tensor) learning rate."""
    parameters = list(model.parameters())
    for tensor in [*parameters, *lrs]:
        tensor.grad = None
    optimizer = torch.optim.SGD([{"params": [p]} for p in parameters], lr=1.0)
    for i in range(len(batch)):
        with higher.innerloop_ctx(model, optimizer, copy_initial_weights=False,
                                  override={"lr": list(lrs)}) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fmodel(batch.support_x[i]), batch.support_y[i]))
            (F.cross_entropy(fmodel(batch.query_x[i]), batch.query_y[i]) / len(batch)).backward()
    return [t.grad.clone() for t in [*parameters, *lrs] if t.grad is not None]


@pytest.mark.parametrize("batching", ["vmap", "loop"])
@pytest.mark.parametrize("kind,steps", [("conv4", 1), ("conv4", 3), ("mlp", 2)])
def test_second_order_meta_gradient_equals_higher(kind, steps, batching):
    batch = random_episodes()
    learner = build(MAML, small_model(kind), inner_lr=0.3, inner_steps=steps, batching=batching)
    ours = meta_gradient(learner, batch)
    lrs = [torch.tensor(0.3, dtype=torch.float64) for _ in learner.meta_parameters()]
    assert_relative(ours, higher_meta_gradient(learner.model, batch, steps, lrs), 1e-10)
    first_order = build(MAML, copy.deepcopy(learner.model), inner_lr=0.3, inner_steps=steps,
                        first_order=True)
    difference = [o - f for o, f in zip(ours, meta_gradient(first_order, batch))]
    assert max(float(d.norm() / o.norm()) for d, o in zip(difference, ours)) > 1e-3  # not FOMAML


@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_first_order_meta_gradient_equals_a_hand_written_reference(batching):
    batch, steps, lr = random_episodes(), 2, 0.3
    learner = build(MAML, small_model("conv4"), inner_lr=lr, inner_steps=steps, first_order=True,
                    batching=batching)
    model = copy.deepcopy(learner.model)
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(len(batch)):  # SGD on a copy, then the query gradient at the adapted weights
        adapted = copy.deepcopy(model)
        for _ in range(steps):
            loss = F.cross_entropy(adapted(batch.support_x[i]), batch.support_y[i])
            gradients = torch.autograd.grad(loss, list(adapted.parameters()))
            with torch.no_grad():
                for p, g in zip(adapted.parameters(), gradients):
                    p -= lr * g
        loss = F.cross_entropy(adapted(batch.query_x[i]), batch.query_y[i])
        for e, g in zip(expected, torch.autograd.grad(loss, list(adapted.parameters()))):
            e += g / len(batch)
    assert_relative(meta_gradient(learner, batch), expected, 1e-10)


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_sgd_gradients_equal_higher_with_per_parameter_learning_rates(first_order):
    batch, steps = random_episodes(), 2
    learner = build(MetaSGD, small_model("conv4"), inner_lr=0.3, inner_steps=steps,
                    first_order=first_order)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # distinct rates, so a mix-up between parameters would show
        for lr in learner.learned_lrs.values():
            lr.copy_(0.1 + 0.4 * torch.rand(lr.shape, generator=generator, dtype=lr.dtype))
    ours = meta_gradient(learner, batch)
    if first_order:  # the reference, with the inner gradients cut out of the graph
        reference = hand_unrolled_meta_sgd_gradient(learner, batch, steps)
    else:
        reference = higher_meta_gradient(learner.model, batch, steps, list(learner.learned_lrs.values()))
    assert_relative(ours, reference, 1e-10)


def hand_unrolled_meta_sgd_gradient(learner, batch, steps):
    """First-order Meta-SGD by plain autograd: phi = theta - alpha * stop_gradient(grad)."""
    names = [name for name, _ in learner.model.named_parameters()]
    theta = [p.detach().requires_grad_() for p in learner.model.parameters()]
    alphas = [a.detach().requires_grad_() for a in learner.learned_lrs.values()]
    total = 0.0
    for i in range(len(batch)):
        phi = theta
        for _ in range(steps):
            loss = F.cross_entropy(torch.func.functional_call(
                learner.model, dict(zip(names, phi)), (batch.support_x[i],)), batch.support_y[i])
            gradients = torch.autograd.grad(loss, phi)
            phi = [p - a * g.detach() for p, a, g in zip(phi, alphas, gradients)]
        total = total + F.cross_entropy(torch.func.functional_call(
            learner.model, dict(zip(names, phi)), (batch.query_x[i],)), batch.query_y[i]) / len(batch)
    return list(torch.autograd.grad(total, theta + alphas))


@pytest.mark.parametrize("cls,options", [
    (MAML, {}), (MAML, {"first_order": True}), (MAML, {"transductive": False}), (MetaSGD, {}),
])
def test_vmapped_and_looped_meta_batches_agree(cls, options):
    batch = random_episodes(n_episodes=4, n_way=5, k_shot=1, q_query=3, size=28, dtype=torch.float32)
    model = small_model("conv4", n_way=5, dtype=torch.float32)
    vmapped = build(cls, model, batching="vmap", inner_steps=2, **options)
    looped = build(cls, copy.deepcopy(model), batching="loop", inner_steps=2, **options)
    assert_relative(meta_gradient(vmapped, batch), meta_gradient(looped, batch), 1e-5)
    torch.testing.assert_close(vmapped.predict_episodes(batch), looped.predict_episodes(batch),
                               rtol=1e-5, atol=1e-5)


def test_a_frozen_parameter_gets_no_gradient():
    model = small_model("conv4")
    frozen = list(model.parameters())[-1].requires_grad_(False)
    before = frozen.detach().clone()
    build(MAML, model, batching="loop", inner_steps=1).train_step(random_episodes(n_episodes=2))
    assert frozen.grad is None  # as backward() leaves it
    torch.testing.assert_close(frozen, before, rtol=0, atol=0)


def test_auto_batching_is_the_loop_on_every_device():
    """Several CPU cores are used by processes (--nproc), not by the batching."""
    assert resolve_batching("auto") == "loop"
    assert resolve_batching("vmap") == "vmap"


def test_batch_statistics_are_transductive_or_not_as_asked():
    """Transductive: a query's logits depend on the other queries (they share BatchNorm
    statistics). Not transductive: each query is normalised with the support set alone."""
    batch = random_episodes(n_episodes=2, size=28, dtype=torch.float32)
    changed_x = batch.query_x.clone()
    changed_x[:, -1] = 1 - changed_x[:, -1]
    changed = EpisodeBatch(batch.support_x, batch.support_y, changed_x, batch.query_y)
    for transductive in (True, False):
        learner = build(MAML, small_model("conv4", dtype=torch.float32), transductive=transductive)
        before, after = learner.predict_episodes(batch), learner.predict_episodes(changed)
        others_moved = float((before[:, :-1] - after[:, :-1]).abs().max())
        assert (others_moved > 1e-3) if transductive else (others_moved < 1e-6)


def test_running_statistics_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="track_running_stats=False"):
        build(MAML, Conv4(5, hidden=4, track_running_stats=True))


def live_tensors():
    gc.collect()
    with warnings.catch_warnings():  # isinstance on deprecated torch.distributed objects warns
        warnings.simplefilter("ignore", FutureWarning)
        return [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]


@pytest.mark.parametrize("cls,batching", [(MAML, "vmap"), (MAML, "loop"), (MetaSGD, "vmap")])
def test_memory_is_flat_and_no_graph_survives_a_step(cls, batching):
    batch = random_episodes(n_episodes=4)
    learner = build(cls, small_model("conv4"), inner_steps=3, batching=batching)
    counts = []
    for step in range(1, 21):
        values = learner.train_step(batch)
        if step in (4, 12, 20):  # Adam's state exists from the first step
            counts.append(len(live_tensors()))
    assert len(set(counts)) == 1, counts
    assert not any(v.requires_grad for v in values.values())
    assert not [t for t in live_tensors() if t.grad_fn is not None]


@pytest.mark.parametrize("cls", [MAML, MetaSGD])
def test_state_dict_resumes_exactly(cls):
    batch = random_episodes()
    learner = build(cls, small_model("conv4"), inner_steps=2)
    for _ in range(2):
        learner.train_step(batch)
    resumed = build(cls, small_model("conv4", seed=5), inner_steps=2)
    resumed.load_state_dict(copy.deepcopy(learner.state_dict()))
    learner.train_step(batch)
    resumed.train_step(batch)
    for a, b in zip(learner.meta_parameters(), resumed.meta_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.fixture(scope="module")
def omniglot(data_root):
    return omniglot_few_shot("maml", data_root=data_root)


def short_omniglot_run(stream, learner, steps, meta_batch_size, run_dir, seed=0):
    """Meta-train for ``steps`` iterations, evaluate 100 test episodes before and after."""
    settings = ProtocolSettings(steps_per_task=steps, n_way=5, k_shot=1, q_query=5,
                                meta_batch_size=meta_batch_size, eval_episodes=100,
                                eval_meta_batch_size=50)
    results = RunResults.empty("omniglot", learner.name, None, seed, [t.name for t in stream],
                               [settings.eval_episodes], episodic=True)
    Protocol(stream, None, learner, settings, seed, Trackers([])).run(results, run_dir)
    return float(results.initial_accuracy[0]), float(results.accuracy[0, 0])


def test_short_omniglot_training_beats_chance_and_fine_tuning_from_random_init(omniglot, tmp_path):
    """5-way 1-shot, 300 iterations of meta-batch 4 (about 20 s on 2 CPU cores); the initial
    accuracy is the random initialisation fine-tuned with the same 3 inner steps, so the gain is
    what meta-training learned (seed 0: 51% before, 84% after)."""
    torch.manual_seed(0)
    learner = build(MAML, Conv4(5, hidden=32), lr=0.003, batching="vmap")
    before, after = short_omniglot_run(omniglot, learner, steps=300, meta_batch_size=4,
                                       run_dir=tmp_path)
    assert after > 0.75 and after > before + 0.2, (before, after)


def test_a_run_killed_mid_task_resumes_from_the_last_checkpoint_with_the_same_result(omniglot,
                                                                                     tmp_path):
    """One task of 40 steps, checkpoints every 10: killed in step 28, the resumed run trains
    steps 20-39 only and ends with the uninterrupted run's accuracy and learning curve."""
    calls = {"n": 0}

    def learner(kill_at=None):
        torch.manual_seed(0)
        maml = build(MAML, Conv4(5, hidden=8), lr=0.003)
        original = maml.train_step

        def counted(batch):
            calls["n"] += 1
            if calls["n"] == kill_at:
                raise KeyboardInterrupt
            return original(batch)

        maml.train_step = counted
        return maml

    settings = ProtocolSettings(steps_per_task=40, checkpoint_every=10, n_way=5, k_shot=1,
                                q_query=2, meta_batch_size=2, eval_episodes=20,
                                eval_meta_batch_size=20)

    def run(maml, run_dir, resume=False):
        results = RunResults.empty("omniglot", "maml", None, 0, [t.name for t in omniglot],
                                   [20], episodic=True)
        protocol = Protocol(omniglot, None, maml, settings, 0, Trackers([]))
        if resume:
            protocol.restore(load_checkpoint(run_dir / "checkpoint.pt"), results)
        protocol.run(results, run_dir)
        return results

    reference = run(learner(), tmp_path / "reference")
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        run(learner(kill_at=28), tmp_path / "killed")
    calls["n"] = 0
    resumed = run(learner(), tmp_path / "killed", resume=True)
    assert calls["n"] == 20, "the resumed run did not start at step 20"
    assert np.array_equal(resumed.accuracy, reference.accuracy)
    assert resumed.curves["loss"] == reference.curves["loss"]
