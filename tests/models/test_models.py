"""Model construction: activations by name, initialisations, and re-drawing weights from a seed
alone."""

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


def test_init_std_draws_every_weight_and_bias_from_that_normal_also_when_reinitialised():
    model = MLP(784, 10, hidden=(400,), init_std=0.01)
    for draw in range(2):
        values = torch.cat([p.detach().flatten() for p in model.parameters()])
        assert values.numel() == 784 * 400 + 400 + 400 * 10 + 10
        assert abs(values.mean().item()) < 1e-4
        assert values.std().item() == pytest.approx(0.01, rel=0.01)
        reinitialise(model, draw)
    default = MLP(784, 10, hidden=(400,))  # PyTorch's: uniform, bound 1/sqrt(fan-in)
    assert default.features[1].weight.abs().max().item() <= 784 ** -0.5


def test_a_non_positive_init_std_is_refused():
    with pytest.raises(ValueError, match="init_std must be positive"):
        MLP(4, 2, hidden=(3,), init_std=0.0)


@pytest.mark.parametrize("build", [lambda: MLP(16, 3, hidden=(5,)), lambda: Conv4(3, hidden=4),
                                   lambda: MLP(16, 3, hidden=(5,), init_std=0.1)])
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
