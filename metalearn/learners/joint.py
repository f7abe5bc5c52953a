"""Joint training ("Offline" in van de Ven & Tolias 2019): the upper bound of continual learning.

While on task i the model trains on the training data of tasks 0..i together, mixed in
proportion to their sizes, so nothing seen is ever out of reach.
"""

from __future__ import annotations

from typing import Iterator

from metalearn.learners.finetune import FineTune, FineTuneOptions
from metalearn.learners.registry import register
from metalearn.seeding import reserved
from metalearn.tasks import Batch


JOINT_BATCHES = reserved("joint.batches")  # apart from the protocol's


class JointOptions(FineTuneOptions):
    batch_size: int = 128


@register
class Joint(FineTune):
    """Fine-tuning whose minibatches mix every task seen so far."""

    name = "joint"
    Options = JointOptions

    def training_batches(self, task_index: int, phase: str = "train") -> Iterator[Batch]:
        return self.context.stream.train_batches(
            self.context.scenario, range(task_index + 1), self.options.batch_size,
            JOINT_BATCHES.generator(self.context.seed, task_index), seen=task_index + 1,
            setting="learner.options.batch_size",
        )
