"""CPG: earlier tasks' compacted weights and predictions untouched across tasks and growth,
binary pick masks at test, growth only when the goal is missed, task-IL only, resume."""

import copy
import math

import numpy as np
import pytest
import torch

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import LearnerContext
from metalearn.learners.cpg import CPG  # the import registers "cpg"
from metalearn.models import MLP, Conv4
from metalearn.seeding import reserved
from metalearn.tasks import ClassificationTask, LabelledImages, Scenario, Stream

FAST = {"lr": 0.01, "mask_lr": 0.01, "grow_steps": 20, "compact_steps": 20, "prune_every": 5,
        "compact_lr": 0.001, "retrain_steps": 10, "retrain_lr": 0.001}


def pixel_stream(hard=(), n_tasks=3, n=256, seed=0):
    """Task k on 4x4 images: is pixel k bright? (easy); for k in ``hard``, random labels, which
    no network learns beyond chance on held-out data."""
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for k in range(n_tasks):
        images = torch.randint(0, 256, (3 * n, 4, 4), generator=generator, dtype=torch.uint8)
        labels = (images.flatten(1)[:, k] > 127).long()
        if k in hard:
            labels = torch.randint(0, 2, (3 * n,), generator=generator)
        split = [LabelledImages(images[i * n:(i + 1) * n], labels[i * n:(i + 1) * n]) for i in range(3)]
        tasks.append(ClassificationTask(f"pixel {k}", 2, split[0], split[1], validation=split[2]))
    return Stream("pixels", tuple(tasks), frozenset(Scenario))


def cpg(stream, model="mlp", **options):
    torch.manual_seed(0)
    outputs = stream.n_outputs(Scenario.TASK)
    network = (MLP(16, outputs, hidden=(32,)) if model == "mlp" else
               Conv4(outputs, hidden=8, track_running_stats=True))  # BatchNorm statistics too
    return CPG(network, CPG.Options(**{**FAST, **options}),
               LearnerContext(stream, Scenario.TASK, torch.device("cpu"), seed=0))


def learn(learner, task_index, steps=60, before_end=lambda: None):
    """The protocol's part for one task, minus evaluation: every phase on the task's batches."""
    generator = reserved("train_batches").generator(0, task_index)
    batches = learner.context.stream.train_batches(Scenario.TASK, [task_index], 32, generator,
                                                   seen=task_index + 1)
    learner.begin_task(task_index)
    for phase in learner.phases(task_index, steps):
        learner.begin_phase(task_index, phase.name)
        for _ in range(phase.steps):
            learner.train_step(next(batches))
    before_end()
    learner.end_task(task_index)


def corner(tensor, shape):
    return tensor[tuple(slice(0, n) for n in shape)]


@pytest.mark.parametrize("model", ["mlp", "conv4"])
def test_earlier_tasks_weights_and_predictions_are_bitwise_unchanged_after_later_tasks_and_growth(model):
    stream = pixel_stream(hard={1})
    learner = cpg(stream, model, accuracy_goal=0.8)  # met by task 0, missed by task 1: it grows
    x = torch.cat([stream[k].inputs(stream[k].test.images) for k in range(3)])
    learn(learner, 0)
    after_first = learner.predict(x, 0)
    state = {name: t.clone() for name, t in learner.model.state_dict().items()}
    owners = [o.clone() for o in learner.owners]
    learn(learner, 1, steps=30)
    learn(learner, 2, steps=30)
    assert torch.equal(learner.predict(x, 0), after_first)
    for (name, layer), owner in zip(learner.layers, owners):
        kept = owner == 1
        assert kept.any()
        assert torch.equal(corner(layer.weight, kept.shape)[kept], state[f"{name}.weight"][kept]), \
            f"task 0's {name} moved"
    prunable = {f"{name}.weight" for name, _ in learner.layers}
    for name, value in learner.model.state_dict().items():  # biases, BatchNorm: task 0's
        if name not in prunable:
            assert torch.equal(corner(value, state[name].shape), state[name]), name
    assert learner.task_widths[0] != learner.task_widths[2] and learner.width == 1.5
    assert not torch.equal(learner.model(x), learner.predict(x, 0)), "nothing happened since task 0"
    restored = cpg(stream, model)
    restored.load_state_dict(learner.state_dict())
    assert all(torch.equal(restored.predict(x, k), learner.predict(x, k)) for k in range(3))


def test_picked_masks_are_binary_at_test_and_choose_exactly_the_earlier_weights_used():
    stream = pixel_stream(n_tasks=2)
    learner = cpg(stream, mask_lr=0.05)
    learn(learner, 0)
    scores = {}
    learn(learner, 1, before_end=lambda: scores.update(
        {name: s.detach().clone() for (name, _), s in zip(learner.layers, learner.scores)}))
    picks = learner.picks[1]
    assert all(p.dtype == torch.bool for p in picks)
    earlier = [o == 1 for o in learner.owners]
    assert all(torch.equal(p, (scores[name] > 5e-3) & e)
               for p, e, (name, _) in zip(picks, earlier, learner.layers))
    assert sum(int((e & ~p).sum()) for p, e in zip(picks, earlier)) > 0, "the mask dropped nothing"
    assert sum(int(p.sum()) for p in picks) > 0, "the mask kept nothing"
    assert not all(torch.isin(s[e], torch.tensor([0.0, 1.0])).all()
                   for s, e in zip(scores.values(), earlier)), "the scores should be real-valued"
    reference = copy.deepcopy(learner.model)  # task 1's network built by hand: W * {0, 1}
    with torch.no_grad():
        for (name, layer), owner, pick in zip(learner.layers, learner.owners, picks):
            used = ((owner == 2) | pick).float()
            reference.get_submodule(name).weight.copy_(layer.weight * used)
    x = stream[1].inputs(stream[1].test.images)
    assert torch.equal(learner.predict(x, 1), reference.eval()(x))


def test_the_network_grows_only_when_a_task_misses_its_accuracy_goal():
    stream = pixel_stream(hard={1}, n_tasks=2)  # task 0 easy, task 1 random labels
    learner = cpg(stream, accuracy_goal=0.8)
    learn(learner, 0, steps=100)
    assert learner.goal_checks[0] >= 0.8
    assert learner.width == 1.0 and learner.task_widths[0] == [32, 4]
    learn(learner, 1, steps=100)
    assert learner.goal_checks[1] < 0.8
    assert learner.width == 1.5 and learner.task_widths[1] == [round(32 * math.sqrt(1.5)), 4]
    hidden, head = (layer.weight for _, layer in learner.layers)
    assert hidden.shape == (39, 16) and head.shape == (4, 39)
    assert (learner.owners[0][32:] == 2).any() and (learner.owners[1][:, 32:] == 2).any(), \
        "task 1 kept none of the grown weights"
    assert not (learner.owners[0][32:] == 1).any(), "task 0 owns a weight grown after it"



def test_a_benchmark_without_validation_data_is_refused_with_the_fix(tiny_config, tmp_path):
    config = load_config(tiny_config(learner={"name": "cpg"}, scenario="task"))
    with pytest.raises(ValueError, match=r"set benchmark.options.validation"):
        run(config, run_dir=tmp_path / "run")


def test_resume_after_a_kill_in_task_three_gives_the_uninterrupted_result_without_forgetting(
        tiny_config, tmp_path, killed_and_resumed):
    options = {**FAST, "mask_lr": 0.001, "accuracy_goal": 1.0}  # grows in task 0
    config = load_config(tiny_config(
        benchmark={"name": "split_mnist", "options": {"validation": 0.1}},
        learner={"name": "cpg", "options": options}, scenario="task",
        protocol__steps_per_task=30, protocol__log_every=5))
    reference = run(config, run_dir=tmp_path / "reference")
    resumed = killed_and_resumed(config)
    assert np.array_equal(resumed.accuracy, reference.accuracy)
    np.testing.assert_equal(resumed.task_values, reference.task_values)
    values, R = reference.task_values, reference.accuracy
    assert values["width"] == [1.5] * 5
    assert values["model_size_bits"][0] < values["model_size_bits"][-1]  # owners' and picks' bits
    assert np.diag(R).min() > 0.9, f"a task was not learned: {np.diag(R)}"
    assert reference.metrics["bwt"] == 0.0
    assert all(np.array_equal(R[j:, j], np.full(len(R) - j, R[j, j])) for j in range(len(R)))
    assert reference.task_end_steps == [80 * (k + 1) for k in range(5)]
    for phase in ("grow", "compact", "retrain"):
        assert f"{phase}/loss" in reference.curves and reference.timings[f"{phase}_s/task_0"] > 0
