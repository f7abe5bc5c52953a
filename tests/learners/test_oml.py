"""OML: the inner loop adapts the head alone, one image per step in order, as a hand-written
loop does; the meta-gradient reaches the representation through the inner steps (against a
hand-written float64 reference); meta-test learns a fresh head online; a killed run resumes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import LearnerContext
from metalearn.learners.oml import OML, kaiming_normal
from metalearn.models import ConvNet
from metalearn.seeding import derive_generator
from metalearn.tasks import ClassPool, EpisodeBatch, EpisodicTask, Stream

CPU = torch.device("cpu")
SIZE = 12


def tiny_stream(n_classes=6, per_class=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n_classes, per_class, SIZE, SIZE), generator=generator,
                           dtype=torch.uint8)
    pool = ClassPool.from_grouped(images, [f"c{i}" for i in range(n_classes)])
    return Stream("tiny", (EpisodicTask("tiny", pool, pool),), frozenset())


def build(cls=OML, stream=None, seed=0, **options):
    """A learner on a two-convolution network in float64, its head sized for the task."""
    torch.manual_seed(seed)
    model = ConvNet(2, image_size=SIZE, channels=(3, 4), strides=(2, 1)).double()
    settings = dict(trajectory_classes=2, trajectory_shots=3, query_shots=2, remember_size=4)
    learner = cls(model, cls.Options(**{**settings, **options}),
                  LearnerContext(stream or tiny_stream(), None, CPU, 0))
    learner.begin_task(0)
    learner.network.double()
    return learner


def trajectory(learner):
    batch = next(learner.training_batches(0))
    return batch._replace(x=batch.x.double(), query_x=batch.query_x.double(),
                          reset=batch.reset.double())


def test_inner_loop_adapts_the_head_only():
    learner = build()
    batch = trajectory(learner)
    params = dict(learner.network.named_parameters())
    adapted = learner.adapt(params, batch.x, batch.y)
    assert learner.inner_names == ["model.head.weight", "model.head.bias"]
    for name, value in adapted.items():
        if name.startswith("model.head."):
            assert not torch.equal(value, params[name]), name
        else:
            assert value is params[name], f"{name} changed in the inner loop"


def hand_written_online_head(features, labels, weight, bias, lr):
    """Plain SGD, one example per step in order, written out: the reference."""
    for feature, label in zip(features, labels):
        probabilities = torch.softmax(weight @ feature + bias, 0)
        error = probabilities - F.one_hot(label, len(bias)).to(probabilities.dtype)
        weight, bias = weight - lr * torch.outer(error, feature), bias - lr * error
    return weight, bias


def test_sequential_one_pass_adaptation_equals_a_hand_written_loop():
    learner = build(inner_lr=0.3)
    batch = trajectory(learner)
    params = dict(learner.network.named_parameters())
    adapted = learner.adapt(params, batch.x, batch.y)
    with torch.no_grad():
        features = learner.model.features(batch.x)
        weight, bias = hand_written_online_head(features, batch.y, params["model.head.weight"],
                                                params["model.head.bias"], 0.3)
        torch.testing.assert_close(adapted["model.head.weight"], weight)
        torch.testing.assert_close(adapted["model.head.bias"], bias)
        # the order matters: the same images presented in reverse end elsewhere
        reverse, _ = hand_written_online_head(features.flip(0), batch.y.flip(0),
                                              params["model.head.weight"], params["model.head.bias"],
                                              0.3)
        assert not torch.allclose(reverse, weight)


def reference_meta_gradient(learner, batch):
    """The meta-loss written out: features, the head's rows reset in place (as OML's code) and
    trained online with a graph, the query loss; its gradient by autograd with respect to every
    parameter."""
    model = learner.model
    with torch.no_grad():
        model.head.weight[batch.classes] = batch.reset
        model.head.bias[batch.classes] = 0
    weight, bias = model.head.weight, model.head.bias
    for image, label in zip(batch.x, batch.y):
        loss = F.cross_entropy(F.linear(model.features(image[None]), weight, bias), label[None])
        g_weight, g_bias = torch.autograd.grad(loss, (weight, bias), create_graph=True)
        lr = learner.options.inner_lr
        weight, bias = weight - lr * g_weight, bias - lr * g_bias
    query_loss = F.cross_entropy(F.linear(model.features(batch.query_x), weight, bias), batch.query_y)
    names, params = zip(*learner.network.named_parameters())
    return dict(zip(names, torch.autograd.grad(query_loss, params, allow_unused=True)))


def test_meta_gradient_reaches_the_representation_through_the_inner_steps():
    """The RLN's meta-gradient equals the hand-written second-order one and is not zero: it
    fails if the representation is detached (no gradient) or the inner steps are cut from the
    graph (first order)."""
    learner = build(lr=0.0)  # Adam at 0 leaves the weights, the step's gradients stay in .grad
    batch = trajectory(learner)
    before = {name: p.detach().clone() for name, p in learner.network.named_parameters()}
    reference = reference_meta_gradient(build(lr=0.0), batch)
    learner.train_step(batch)
    for name, parameter in learner.network.named_parameters():
        if name.startswith("model.features"):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        torch.testing.assert_close(parameter.grad, reference[name], msg=name)
    assert torch.equal(before["model.features.0.weight"], learner.model.features[0].weight)
    first_order = build(lr=0.0, first_order=True)
    first_order.train_step(batch)
    conv = first_order.model.features[0].weight.grad
    assert not torch.allclose(conv, reference["model.features.0.weight"])


def test_train_step_resets_the_trajectory_head_rows():
    learner = build(lr=0.0)
    batch = trajectory(learner)
    learner.train_step(batch)
    torch.testing.assert_close(learner.model.head.weight[batch.classes], batch.reset)
    assert learner.model.head.bias[batch.classes].abs().sum() == 0


def test_trajectories_present_classes_in_turn_and_hold_out_the_query_images():
    learner = build()
    batch = next(learner.training_batches(0))
    assert batch.y.tolist() == [batch.classes[0].item()] * 3 + [batch.classes[1].item()] * 3
    assert len(batch.query_y) == 2 * 2 + 4
    assert batch.query_y[:4].tolist() == [batch.classes[0].item()] * 2 + [batch.classes[1].item()] * 2
    pool_images = learner.context.stream[0].train.images.view(48, -1)

    def rows(x):
        pixels = x.mul(255).round().to(torch.uint8).flatten(1)
        return {int((pool_images == image).all(1).nonzero()) for image in pixels}

    assert not rows(batch.x) & rows(batch.query_x[:4]), "a query image is also a trajectory image"


def test_too_many_trajectory_classes_or_images_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="trajectory_classes=7 exceeds the 6 training classes"):
        build(trajectory_classes=7).training_batches(0)
    with pytest.raises(ValueError, match="lower learner.options.trajectory_shots"):
        build(trajectory_shots=6, query_shots=3).training_batches(0)
    with pytest.raises(ValueError, match="inner_layers=9 but the model has 3"):
        build(inner_layers=9)


def test_meta_test_learns_a_fresh_head_online_in_one_pass():
    learner = build(test_optimizer="sgd", test_lr=0.5)
    generator = torch.Generator().manual_seed(3)
    support_x = torch.rand(2, 6, 1, SIZE, SIZE, generator=generator, dtype=torch.float64)
    query_x = torch.rand(2, 4, 1, SIZE, SIZE, generator=generator, dtype=torch.float64)
    support_y = torch.arange(3).repeat_interleave(2).expand(2, -1)
    batch = EpisodeBatch(support_x, support_y, query_x, torch.arange(2).repeat(2).expand(2, -1))
    logits = learner.predict_episodes(batch)
    assert logits.shape == (2, 4, 3)
    heads = derive_generator(0, "oml.test_heads")
    with torch.no_grad():
        for episode in range(2):
            weight = kaiming_normal((3, learner.model.head.in_features), heads).double()
            weight, bias = hand_written_online_head(
                learner.model.features(support_x[episode]), support_y[episode], weight,
                torch.zeros(3, dtype=torch.float64), 0.5)
            expected = learner.model.features(query_x[episode]) @ weight.T + bias
            torch.testing.assert_close(logits[episode], expected)


def test_meta_test_adam_takes_torch_adams_steps_on_each_stream():
    """The written-out Adam on two streams side by side equals torch.optim.Adam on each alone."""
    learner = build(test_optimizer="adam", test_lr=0.01)
    generator = torch.Generator().manual_seed(4)
    features = torch.rand(2, 7, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 7), generator=generator)
    start = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64)
    weight, bias = learner.learn_online(start, features, labels)
    for stream in range(2):
        w = start[stream].clone().requires_grad_()
        b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.Adam([w, b], lr=0.01)
        for feature, label in zip(features[stream], labels[stream]):
            optimizer.zero_grad()
            F.cross_entropy((feature @ w.T + b)[None], label[None]).backward()
            optimizer.step()
        torch.testing.assert_close(weight[stream], w.detach())
        torch.testing.assert_close(bias[stream], b.detach())


def test_a_trained_learner_is_evaluated_at_any_number_of_ways():
    """The state keeps the meta-training head, not one of protocol.n_way outputs."""
    learner = build()
    learner.train_step(trajectory(learner))
    state = learner.state_dict()
    torch.manual_seed(1)
    model = ConvNet(50, image_size=SIZE, channels=(3, 4), strides=(2, 1)).double()
    other = OML(model, learner.options, learner.context)
    other.network.double()
    other.load_state_dict(state)
    assert other.model.head.weight.shape == (6, learner.model.head.in_features)
    for a, b in zip(learner.network.parameters(), other.network.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_run_killed_mid_task_resumes_from_the_last_checkpoint_with_the_same_result(
        tiny_config, tmp_path, killed_and_resumed):
    """Three Omniglot alphabet groups of 16 steps, checkpoints every 4: killed in the third,
    the resumed run ends with the uninterrupted run's accuracies and learning curve."""
    config = load_config(tiny_config(
        benchmark={"name": "omniglot_alphabets", "options": {"n_tasks": 3}},
        learner={"name": "oml", "options": {"trajectory_classes": 2, "trajectory_shots": 2,
                                            "query_shots": 1, "remember_size": 2, "lr": 0.01}},
        model={"name": "convnet", "options": {"channels": [4, 4], "strides": [2, 2]}},
        scenario=None, protocol__steps_per_task=16, protocol__checkpoint_every=4,
        protocol__log_every=4, protocol__n_way=3, protocol__k_shot=2, protocol__q_query=1,
        protocol__eval_episodes=2, protocol__eval_meta_batch_size=2))
    reference = run(config, run_dir=tmp_path / "reference")
    resumed = killed_and_resumed(config)
    assert np.array_equal(resumed.accuracy, reference.accuracy)
    assert resumed.curves["loss"] == reference.curves["loss"]
