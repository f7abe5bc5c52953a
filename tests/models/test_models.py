"""Model construction: activations by name, and re-drawing weights from a seed alone."""

import pytest
import torch

from metalearn.models import MLP, Conv4, reinitialise


def test_an_unknown_activation_names_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        MLP(4, 2, hidden=(3,), activation="tanh")


@pytest.mark.parametrize("activation, layer", [("relu", torch.nn.ReLU), ("sigmoid", torch.nn.Sigmoid)])
def test_the_activation_is_the_one_asked_for(activation, layer):
    model = MLP(4, 2, hidden=(3, 3), activation=activation)
    assert sum(isinstance(m, layer) for m in model.modules()) == 2


@pytest.mark.parametrize("build", [lambda: MLP(16, 3, hidden=(5,)), lambda: Conv4(3, hidden=4)])
def test_reinitialise_draws_from_its_seed_alone_and_leaves_the_global_state(build):
    model = build()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    reinitialise(model, 42)
    first = [p.detach().clone() for p in model.parameters()]
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(1)  # another global state: the same weights
    reinitialise(model, 42)
    assert all(torch.equal(a, b) for a, b in zip(first, model.parameters()))
    reinitialise(model, 43)
    assert not torch.equal(first[0], next(model.parameters()))
