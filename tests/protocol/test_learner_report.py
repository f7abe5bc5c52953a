"""What a learner reports after each task reaches the results (numbers) and trackers (images)."""

import numpy as np
import pydantic
import pytest
import torch

from metalearn.learners import LearnerContext
from metalearn.learners.finetune import FineTune
from metalearn.models import MLP
from metalearn.protocol import Protocol, ProtocolSettings
from metalearn.results import RunResults
from metalearn.tasks import ClassificationTask, LabelledImages, Scenario, Stream
from metalearn.tracking import Tracker


class Reporting(FineTune):
    """Fine-tuning that reports a number after every task and an image batch after task 1."""

    name = "reporting_example"

    def report(self, task_index):
        shown = {"tasks_done": float(task_index + 1)}
        if task_index == 1:
            shown["pictures"] = torch.full((3, 1, 2, 2), 0.25)
        return shown


class ImageLog(Tracker):
    def __init__(self):
        self.images = []

    def log_images(self, task_index, images):
        self.images.append((task_index, images))


def run_three_tasks(learner_class):
    images = torch.randint(0, 256, (8, 2, 2), dtype=torch.uint8)
    data = LabelledImages(images, torch.arange(8) % 2)
    stream = Stream("tiny", tuple(ClassificationTask(f"t{t}", 2, data, data) for t in range(3)),
                    frozenset(Scenario))
    context = LearnerContext(stream, Scenario.DOMAIN, torch.device("cpu"), seed=0)
    learner = learner_class(MLP(4, 2, hidden=(3,)), learner_class.Options(), context)
    results = RunResults.empty("tiny", learner_class.name, "domain", 0, ["t0", "t1", "t2"],
                               [8, 8, 8], episodic=False)
    tracker = ImageLog()
    protocol = Protocol(stream, Scenario.DOMAIN, learner,
                        ProtocolSettings(steps_per_task=2, batch_size=4), 0, tracker)
    return protocol, results, tracker


MLP_BITS = 32.0 * (4 * 3 + 3 + 3 * 2 + 2)  # MLP(4, 2, hidden=(3,)): 23 float32 parameters


def test_numbers_are_kept_per_task_and_images_go_to_the_trackers(tmp_path):
    protocol, results, tracker = run_three_tasks(Reporting)
    protocol.run(results, tmp_path)
    assert results.task_values == {"model_size_bits": [MLP_BITS] * 3, "tasks_done": [1.0, 2.0, 3.0]}
    ((task_index, images),) = tracker.images
    assert task_index == 1 and list(images) == ["pictures"]
    assert isinstance(images["pictures"], np.ndarray) and np.all(images["pictures"] == 0.25)


def test_a_learner_without_a_report_adds_only_its_model_size(tmp_path):
    protocol, results, tracker = run_three_tasks(FineTune)
    protocol.run(results, tmp_path)
    assert results.task_values == {"model_size_bits": [MLP_BITS] * 3} and tracker.images == []


def test_a_report_value_that_is_neither_a_number_nor_images_is_named(tmp_path):
    class Vector(FineTune):
        name = "vector_report_example"

        def report(self, task_index):
            return {"per_layer": torch.ones(3)}

    protocol, results, _ = run_three_tasks(Vector)
    with pytest.raises(ValueError, match="'per_layer' of shape \\(3,\\): report a number"):
        protocol.run(results, tmp_path)


def test_mid_task_checkpoints_must_fall_between_learning_curve_points():
    with pytest.raises(pydantic.ValidationError, match="checkpoint_every \\(15\\) must be a multiple"):
        ProtocolSettings(steps_per_task=40, log_every=10, checkpoint_every=15)
    assert ProtocolSettings(steps_per_task=40, log_every=10, checkpoint_every=0).checkpoint_every == 0
