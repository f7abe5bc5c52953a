"""Joint training ("Offline" in van de Ven & Tolias 2019): the upper bound of continual learning.

While on task i the model trains on the training data of tasks 0..i together, mixed in
proportion to their sizes, so nothing seen is ever out of reach.
"""

from __future__ import annotations

from typing import Iterator

from metalearn.learners.finetune import FineTune, FineTuneOptions
from metalearn.learners.registry import register
from metalearn.seeding import derive_generator
from metalearn.tasks import Batch


JOINT_BATCHES = 1  # the key of this learner's own batch stream, apart from the protocol's


class JointOptions(FineTuneOptions):
    batch_size: int = 128


@register
class Joint(FineTune):
    """Fine-tuning whose minibatches mix every task seen so far."""

    name = "joint"
    Options = JointOptions

    def training_batches(self, task_index: int) -> Iterator[Batch]:
        return self.context.stream.train_batches(
            self.context.scenario, range(task_index + 1), self.options.batch_size,
            derive_generator(self.context.seed, task_index, JOINT_BATCHES), seen=task_index + 1,
        )
