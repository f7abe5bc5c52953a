"""Prototypical Networks: prototypes and distances against a hand computation, its own training
episodes, and a short Omniglot run that must learn."""

import numpy as np
import pytest
import torch
from torch import nn

from metalearn.learners import LearnerContext
from metalearn.learners.protonet import ProtoNet, ProtoNetOptions, prototypes, squared_distances
from metalearn.protocol import Protocol, ProtocolSettings
from metalearn.results import RunResults
from metalearn.tasks import EpisodeBatch, omniglot_few_shot
from metalearn.tracking import Trackers

CPU = torch.device("cpu")


class Identity2d(nn.Module):
    """Embeds a [1, 1, 2] image as its two pixels (a linear layer held at the identity)."""

    def __init__(self, n_way: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
        with torch.no_grad():
            self.features[1].weight.copy_(torch.eye(2))
            self.features[1].bias.zero_()
        self.head = nn.Linear(2, n_way)


def learner(model, stream=None, **options):
    return ProtoNet(model, ProtoNetOptions(**options), LearnerContext(stream, None, CPU, 0))


def points(*xy):
    return torch.tensor(xy, dtype=torch.float32).view(len(xy), 1, 1, 2)


# 2-way 2-shot: class 0 at (0, 0) and (2, 0), prototype (1, 0); class 1 at (0, 2) and (0, 4),
# prototype (0, 3). Query (1, 1): 1 from (1, 0), 1 + 4 = 5 from (0, 3). Query (0, 4): 1 + 16 =
# 17 from (1, 0), 1 from (0, 3).
SUPPORT, SUPPORT_Y = points((0, 0), (2, 0), (0, 2), (0, 4)), torch.tensor([0, 0, 1, 1])
QUERIES = points((1, 1), (0, 4))
HAND_PROTOTYPES = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
HAND_DISTANCES = torch.tensor([[1.0, 5.0], [17.0, 1.0]])


def test_prototypes_and_distances_equal_a_hand_computation():
    centres = prototypes(SUPPORT.flatten(1), SUPPORT_Y, 2)
    torch.testing.assert_close(centres, HAND_PROTOTYPES)
    torch.testing.assert_close(squared_distances(QUERIES.flatten(1), centres), HAND_DISTANCES)


def test_prototypes_follow_labels_not_positions():
    shuffled = torch.tensor([2, 0, 3, 1])
    centres = prototypes(SUPPORT.flatten(1)[shuffled], SUPPORT_Y[shuffled], 2)
    torch.testing.assert_close(centres, HAND_PROTOTYPES)


def test_query_logits_are_negative_squared_distances_to_the_prototypes():
    batch = EpisodeBatch(SUPPORT[None], SUPPORT_Y[None], QUERIES[None], torch.tensor([[0, 1]]))
    logits = learner(Identity2d()).predict_episodes(batch)
    torch.testing.assert_close(logits, -HAND_DISTANCES[None])


def test_training_step_follows_the_gradient_of_the_hand_loss():
    """One Adam step's first move is -lr * sign(gradient): the gradient of the cross-entropy of
    the hand logits with respect to the embedding's bias is zero (a shift moves prototypes and
    queries alike), and with respect to its weight it is not."""
    model = Identity2d()
    protonet = learner(model, lr=0.01)
    batch = EpisodeBatch(SUPPORT[None], SUPPORT_Y[None], QUERIES[None], torch.tensor([[0, 1]]))
    protonet.optimizer.zero_grad()
    loss, accuracy = protonet.meta_gradient(batch)
    expected = torch.nn.functional.cross_entropy(-HAND_DISTANCES, torch.tensor([0, 1]))
    torch.testing.assert_close(loss, expected)
    assert accuracy == 1.0
    torch.testing.assert_close(model.features[1].bias.grad, torch.zeros(2), atol=1e-6, rtol=0)
    assert model.features[1].weight.grad.abs().sum() > 1e-3


def test_a_trained_embedding_loads_into_a_model_of_another_n_way():
    """The head is never used: a 2-way-built learner's state tests in a 7-way-built model."""
    trained = learner(Identity2d())
    with torch.no_grad():
        trained.embedding[1].weight.mul_(3.0)
    other = learner(Identity2d(n_way=7))
    other.load_state_dict(trained.state_dict())
    batch = EpisodeBatch(SUPPORT[None], SUPPORT_Y[None], QUERIES[None], torch.tensor([[0, 1]]))
    torch.testing.assert_close(other.predict_episodes(batch), -9 * HAND_DISTANCES[None])
    assert other.model_size_bits() == 6 * 32  # the embedding's weight and bias


@pytest.fixture(scope="module")
def omniglot(data_root):
    return omniglot_few_shot("vinyals", data_root=data_root)


def test_own_training_episodes_have_train_way_classes(omniglot):
    from metalearn.models import Conv4

    protonet = learner(Conv4(5, hidden=8), omniglot, train_way=12, train_shot=2, train_query=3)
    batch = next(protonet.training_batches(0))
    assert batch.support_x.shape[:2] == (1, 24) and batch.query_x.shape[:2] == (1, 36)
    assert sorted(batch.support_y[0].unique().tolist()) == list(range(12))
    again = next(learner(Conv4(5, hidden=8), omniglot, train_way=12, train_shot=2,
                         train_query=3).training_batches(0))
    assert torch.equal(batch.support_x, again.support_x), "episodes are not seeded"
    assert learner(Conv4(5, hidden=8), omniglot, train_way=None).training_batches(0) is None


@pytest.mark.slow
def test_short_omniglot_training_learns(omniglot, tmp_path):
    """200 steps of 20-way training episodes with a small Conv4 (seconds on a CPU) lift 5-way
    1-shot accuracy well above the untrained embedding's (seed 0: 28% before, 66% after)."""
    from metalearn.models import Conv4

    torch.manual_seed(0)
    protonet = learner(Conv4(5, hidden=16), omniglot, train_way=20)
    settings = ProtocolSettings(steps_per_task=200, n_way=5, k_shot=1, q_query=5, meta_batch_size=1,
                                eval_episodes=100, eval_meta_batch_size=50)
    results = RunResults.empty("omniglot", "protonet", None, 0, ["omniglot-vinyals"], [100],
                               episodic=True)
    Protocol(omniglot, None, protonet, settings, 0, Trackers([])).run(results, tmp_path)
    before, after = float(results.initial_accuracy[0]), float(results.accuracy[0, 0])
    assert after > 0.55 and after > before + 0.25, (before, after)
    assert np.isfinite(results.curves["loss"]).all()
