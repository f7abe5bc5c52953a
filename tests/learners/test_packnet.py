"""PackNet: earlier tasks' predictions untouched, owners disjoint and sized by the prune
fraction, pruned weights at zero until reused, task-IL only, resume, and that it learns."""

import numpy as np
import pytest
import torch

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import LearnerContext
from metalearn.learners.packnet import FREE, PackNet  # the import registers "packnet"
from metalearn.models import Conv4, MLP
from metalearn.seeding import reserved
from metalearn.tasks import ClassificationTask, LabelledImages, Scenario, Stream


def bright_pixel_stream(n_tasks=3, n=256, seed=0):
    """Task k on 4x4 images: is pixel k bright? Each task needs other weights than the last."""
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for k in range(n_tasks):
        images = torch.randint(0, 256, (2 * n, 4, 4), generator=generator, dtype=torch.uint8)
        labels = (images.flatten(1)[:, k] > 127).long()
        tasks.append(ClassificationTask(f"pixel {k}", 2, LabelledImages(images[:n], labels[:n]),
                                        LabelledImages(images[n:], labels[n:])))
    return Stream("bright", tuple(tasks), frozenset(Scenario))


MODELS = {
    "mlp": lambda outputs: MLP(16, outputs, hidden=(32,)),
    "conv4 with BatchNorm statistics": lambda outputs: Conv4(outputs, hidden=8, track_running_stats=True),
}


def packnet(stream, model="mlp", **options):
    torch.manual_seed(0)
    model = MODELS[model](stream.n_outputs(Scenario.TASK))
    options = {"lr": 0.01, "retrain_steps": 20, "batch_size": 32, **options}
    return PackNet(model, PackNet.Options(**options),
                   LearnerContext(stream, Scenario.TASK, torch.device("cpu"), seed=0))


def train_task(learner, task_index, steps=60):
    """The protocol's part for one task, minus evaluation: begin, steps, end."""
    stream = learner.context.stream
    generator = reserved("train_batches").generator(0, task_index)
    batches = stream.train_batches(Scenario.TASK, [task_index], 32, generator, seen=task_index + 1)
    learner.begin_task(task_index)
    for _ in range(steps):
        learner.train_step(next(batches))


def finish_task(learner, task_index):
    """The protocol's part after the training steps: the later phases (pruning and
    retraining), then ``end_task``."""
    for phase in learner.phases(task_index, 0)[1:]:
        learner.begin_phase(task_index, phase.name)
        batches = learner.training_batches(task_index, phase.name)
        for _ in range(phase.steps):
            learner.train_step(next(batches))
    learner.end_task(task_index)


@pytest.mark.parametrize("model", MODELS)
def test_earlier_tasks_predict_bit_identically_after_later_tasks(model):
    stream = bright_pixel_stream()
    learner = packnet(stream, model)
    x = torch.cat([stream[k].inputs(stream[k].test.images) for k in range(3)])
    train_task(learner, 0)
    finish_task(learner, 0)
    after_first = learner.predict(x, 0)
    kept = {name: w.detach().clone() for name, w in learner.weights.items()}
    first_task_only = [*learner.first_task_only, *learner.model.buffers()]  # biases, BatchNorm
    assert first_task_only
    at_first = [t.detach().clone() for t in first_task_only]
    network_after_first = learner.model(x).detach()
    for k in (1, 2):
        train_task(learner, k)
        finish_task(learner, k)
        assert torch.equal(learner.predict(x, 0), after_first)
    for (name, w), owner in zip(learner.weights.items(), learner.owners):
        assert torch.equal(w[owner == 1], kept[name][owner == 1]), f"task 0's {name} moved"
    assert all(torch.equal(t, t_first) for t, t_first in zip(first_task_only, at_first))
    assert not torch.allclose(learner.model(x), network_after_first), \
        "the later tasks should have changed the whole network, or this test shows nothing"
    restored = packnet(stream, model)
    restored.load_state_dict(learner.state_dict())
    assert all(torch.equal(restored.predict(x, k), learner.predict(x, k)) for k in range(3))


def test_owners_are_disjoint_and_each_task_keeps_its_share_of_what_it_trained():
    stream = bright_pixel_stream()
    learner = packnet(stream, prune_fraction=0.75, retrain_steps=0)
    heads = [stream.output_slice(Scenario.TASK, k) for k in range(3)]
    for k in range(3):
        train_task(learner, k)
        before_pruning = [w.detach().clone() for w in learner.weights.values()]
        trained = [(owner == FREE) & (w != start) for w, owner, start in
                   zip(before_pruning, learner.owners, learner.at_start)]
        owners_before = [owner.clone() for owner in learner.owners]
        finish_task(learner, k)
        for owner, earlier, was_trained, value in zip(learner.owners, owners_before, trained,
                                                      before_pruning):
            assert torch.equal(owner[earlier != FREE], earlier[earlier != FREE]), "an owner changed"
            assert owner.min() >= FREE and owner.max() <= k + 1
            kept = owner == k + 1
            assert not (kept & ~was_trained).any(), "a task kept a weight it did not train"
            assert int(kept.sum()) == int(was_trained.sum()) - round(0.75 * int(was_trained.sum()))
            pruned = was_trained & ~kept
            assert value[kept].abs().min() >= value[pruned].abs().max(), "pruned a larger weight"
        head_owner = learner.owners[-1]
        for other in range(3):
            if other != k:  # outputs of other tasks get no gradient: never this task's
                assert not (head_owner[heads[other]] == k + 1).any()
        capacity = learner.capacity()
        assert sum(capacity.values()) == pytest.approx(1.0)
        total = sum(o.numel() for o in learner.owners)
        for t in range(k + 1):
            assert capacity[f"task_{t}"] == sum(int((o == t + 1).sum()) for o in learner.owners) / total
    assert 0 < capacity["task_2"] < capacity["task_1"] < capacity["task_0"]


def test_pruned_weights_stay_zero_until_a_later_task_trains_them():
    stream = bright_pixel_stream()
    learner = packnet(stream, retrain_steps=30)
    train_task(learner, 0)
    finish_task(learner, 0)  # retrains the survivors for 30 steps
    free = [owner == FREE for owner in learner.owners]
    assert all(torch.equal(w[f], torch.zeros_like(w[f])) for w, f in zip(learner.weights.values(), free))
    train_task(learner, 1)
    reused = sum(int((w[f] != 0).sum()) for w, f in zip(learner.weights.values(), free))
    assert reused > 0, "task 1 trained none of the freed weights"
    finish_task(learner, 1)
    for w, owner in zip(learner.weights.values(), learner.owners):
        assert torch.equal(w[owner == FREE], torch.zeros_like(w[owner == FREE]))



def test_resume_after_a_kill_in_task_three_gives_the_uninterrupted_result(tiny_config, tmp_path,
                                                                         killed_and_resumed):
    config = load_config(tiny_config(learner={"name": "packnet", "options": {"retrain_steps": 10}},
                                     scenario="task", protocol__steps_per_task=30))
    reference = run(config, run_dir=tmp_path / "reference")
    resumed = killed_and_resumed(config)
    assert np.array_equal(resumed.accuracy, reference.accuracy)
    assert resumed.task_values == reference.task_values  # the same capacity per task


def test_learns_split_mnist_task_incremental_without_forgetting(tiny_config, tmp_path):
    options = {"lr": 0.01, "retrain_steps": 20, "retrain_lr": 0.001}
    config = load_config(tiny_config(learner={"name": "packnet", "options": options},
                                     scenario="task", protocol__steps_per_task=40))
    results = run(config, run_dir=tmp_path / "run")
    R = results.accuracy
    assert np.diag(R).min() > 0.9, f"a task was not learned: {np.diag(R)}"
    assert results.metrics["acc"] > 0.95  # chance: 0.5
    assert results.metrics["bwt"] == 0.0  # earlier tasks predict exactly as right after training
    assert all(np.array_equal(R[j:, j], np.full(len(R) - j, R[j, j])) for j in range(len(R)))
    used, free = results.task_values["capacity_used"], results.task_values["capacity_free"]
    assert all(0 < u < 0.5 for u in used)  # at most half of what each task trained
    assert sum(used) + free[-1] == pytest.approx(1.0)


def test_retraining_is_a_phase_of_the_protocol_logged_timed_and_counted(tiny_config, tmp_path):
    options = {"lr": 0.01, "retrain_steps": 10}
    config = load_config(tiny_config(learner={"name": "packnet", "options": options},
                                     scenario="task", protocol__steps_per_task=20,
                                     protocol__log_every=5))
    results = run(config, run_dir=tmp_path / "run")
    tasks = len(results.task_names)
    assert results.task_end_steps == [30 * (k + 1) for k in range(tasks)]
    assert [step for step, _ in results.curves["retrain/loss"]][:2] == [25, 30]
    assert [step for step, _ in results.curves["loss"]][:4] == [5, 10, 15, 20]
    assert all(results.timings[f"retrain_s/task_{k}"] > 0 for k in range(tasks))
    sizes = results.task_values["model_size_bits"]
    assert sizes[0] < sizes[-1]  # the owners' bits grow with the tasks


def test_a_nan_in_retraining_stops_the_run_with_the_completed_tasks_kept(tiny_config, tmp_path,
                                                                        monkeypatch):
    from metalearn.protocol.loop import NonFiniteLossError
    retrain_steps = []

    def step(self, batch):
        retrain_steps.append(self.optimizer.param_groups[0]["lr"] == self.options.retrain_lr)
        loss = original(self, batch)
        return loss * float("nan") if sum(retrain_steps) == 5 else loss

    original = PackNet._step
    monkeypatch.setattr(PackNet, "_step", step)
    options = {"lr": 0.01, "retrain_steps": 10, "retrain_lr": 0.002}
    config = load_config(tiny_config(learner={"name": "packnet", "options": options},
                                     scenario="task", protocol__steps_per_task=20))
    with pytest.raises(NonFiniteLossError, match=r"retrain/loss is nan at task 0 .*step 24"):
        run(config, run_dir=tmp_path / "run")
