"""Learners: one file each, registered by name. ``metalearn list`` shows them all."""

from metalearn.learners import (  # noqa: F401  (registers them)
    dgr,
    ewc,
    finetune,
    joint,
    lstm_optimizer,
    maml,
    mas,
    meta_lstm,
    meta_sgd,
    online_ewc,
    packnet,
    pretrain_finetune,
    reptile,
    si,
)
from metalearn.learners.base import (
    CLASSIFICATION,
    EPISODIC,
    Learner,
    LearnerContext,
    LearnerOptions,
    adam,
    check_compatible,
    masked_cross_entropy,
)
from metalearn.learners.registry import available_learners, get_learner, register

__all__ = [
    "CLASSIFICATION",
    "EPISODIC",
    "Learner",
    "LearnerContext",
    "LearnerOptions",
    "adam",
    "available_learners",
    "check_compatible",
    "get_learner",
    "masked_cross_entropy",
    "register",
]
