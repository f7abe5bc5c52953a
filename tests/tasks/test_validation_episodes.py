"""The protocol's few-shot validation episodes come from the validation classes alone."""

import torch

from metalearn.learners import LearnerContext
from metalearn.learners.maml import MAML
from metalearn.models import build_model
from metalearn.protocol import Protocol, ProtocolSettings
from metalearn.results import RunResults
from metalearn.tasks import Stream
from metalearn.tracking import Tracker


def episode_classes(episodes) -> set[str]:
    """The names of the classes the episodes draw their images from."""
    pool = episodes.pool
    owner = torch.searchsorted(pool.offsets, episodes.indices.flatten(), right=True) - 1
    return {pool.names[c] for c in owner.unique().tolist()}


def test_validation_episodes_never_share_a_class_with_test_episodes(omniglot):
    stream = Stream(omniglot.name, (omniglot,), frozenset())
    context = LearnerContext(stream, None, torch.device("cpu"), seed=0)
    learner = MAML(build_model("conv4", (1, 28, 28), 5), MAML.Options(), context)
    settings = ProtocolSettings(steps_per_task=1, eval_episodes=200, validation_episodes=200,
                                validate_every=1)
    protocol = Protocol(stream, None, learner, settings, seed=0, tracker=Tracker())
    validation, test = protocol._episodes(0, "validation"), protocol._episodes(0, "test")
    validation_classes, test_classes = episode_classes(validation), episode_classes(test)
    assert validation_classes <= set(omniglot.validation.names)
    assert test_classes <= set(omniglot.test.names)
    assert len(validation_classes) > 90 and len(test_classes) > 300  # most of each pool drawn
    assert not validation_classes & test_classes
    assert not {name.partition("@")[0] for name in omniglot.train.names} & validation_classes


def test_a_few_shot_run_tests_its_best_validation_state(omniglot, tmp_path):
    stream = Stream(omniglot.name, (omniglot,), frozenset())
    context = LearnerContext(stream, None, torch.device("cpu"), seed=0)
    learner = MAML(build_model("conv4", (1, 28, 28), 5), MAML.Options(), context)
    settings = ProtocolSettings(steps_per_task=6, meta_batch_size=2, eval_episodes=4,
                                validation_episodes=4, eval_meta_batch_size=4, log_every=1,
                                validate_every=2, select="best_validation")
    results = RunResults.empty("omniglot", "maml", None, 0, [omniglot.name], [4], episodic=True)
    Protocol(stream, None, learner, settings, seed=0, tracker=Tracker()).run(results, tmp_path)
    curve = results.validation_curves[omniglot.name]
    assert [step for step, _ in curve] == [2, 4, 6]
    best_step, best = max(curve, key=lambda point: (point[1], -point[0]))  # the earliest best
    assert results.selection == [{"rule": "best_validation", "step": best_step,
                                  "validation_accuracy": best}]
    assert results.metrics["val_acc"] == best  # the tested state scored again
    assert {"loss", "accuracy"} <= results.curves.keys()
