"""ANML: the gate is in (0, 1) and multiplies the features; the inner loop adapts the whole
prediction network and never the gate; the meta-gradient trains the gate, and equals a
hand-written second-order reference."""

import torch
import torch.nn.functional as F

from metalearn.learners.anml import ANML
from test_oml import build, trajectory


def test_the_gate_is_in_zero_one_and_multiplies_the_features():
    learner = build(ANML)
    x = torch.rand(5, 1, 12, 12, dtype=torch.float64)
    gate = learner.network.modulator(x)
    features = learner.model.features(x)
    assert gate.shape == features.shape
    assert ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(learner.network.embed(x), features * gate)
    torch.testing.assert_close(learner.network(x), learner.model.head(features * gate))


def test_the_gate_has_weights_of_its_own():
    learner = build(ANML)
    trunk, copied = learner.model.features[0].weight, learner.network.modulator[0][0].weight
    assert trunk.shape == copied.shape and not torch.equal(trunk, copied)


def test_inner_loop_adapts_the_prediction_network_and_never_the_gate():
    learner = build(ANML)
    assert set(learner.inner_names) == {f"model.{n}" for n, _ in learner.model.named_parameters()}
    batch = trajectory(learner)
    params = dict(learner.network.named_parameters())
    adapted = learner.adapt(params, batch.x, batch.y)
    for name, value in adapted.items():
        if name.startswith("modulator."):
            assert value is params[name], f"the gate's {name} changed in the inner loop"
        else:
            assert not torch.equal(value, params[name]), f"{name} was not adapted"


def reference_meta_gradient(learner, batch):
    """Every prediction-network parameter trained online through a graph, the gate fixed, then
    the query loss: the gradient with respect to every parameter, by autograd."""
    model, modulator = learner.model, learner.network.modulator
    with torch.no_grad():
        model.head.weight[batch.classes] = batch.reset
        model.head.bias[batch.classes] = 0
    names = [name for name, _ in model.named_parameters()]
    weights = [p for _, p in model.named_parameters()]

    def logits(weights, x):
        values = dict(zip(names, weights))
        features = torch.func.functional_call(model.features, {
            n.removeprefix("features."): v for n, v in values.items() if n.startswith("features.")},
            (x,))
        return F.linear(features * modulator(x), values["head.weight"], values["head.bias"])

    for image, label in zip(batch.x, batch.y):
        loss = F.cross_entropy(logits(weights, image[None]), label[None])
        gradients = torch.autograd.grad(loss, weights, create_graph=True)
        weights = [w - learner.options.inner_lr * g for w, g in zip(weights, gradients)]
    query_loss = F.cross_entropy(logits(weights, batch.query_x), batch.query_y)
    all_names, params = zip(*learner.network.named_parameters())
    return dict(zip(all_names, torch.autograd.grad(query_loss, params)))


def test_meta_gradient_trains_the_gate_and_equals_a_hand_written_reference():
    options = dict(lr=0.0, trajectory_classes=1, trajectory_shots=4, query_shots=0,
                   remember_size=3, inner_lr=0.2)
    learner = build(ANML, **options)
    batch = trajectory(learner)
    assert torch.equal(batch.query_x[:4], batch.x), "query_shots=0: the meta-loss re-uses the trajectory"
    reference = reference_meta_gradient(build(ANML, **options), batch)
    learner.train_step(batch)
    for name, parameter in learner.network.named_parameters():
        if name.startswith("modulator."):
            assert parameter.grad.abs().sum() > 0, f"the gate's {name} got no meta-gradient"
        torch.testing.assert_close(parameter.grad, reference[name], msg=name)
