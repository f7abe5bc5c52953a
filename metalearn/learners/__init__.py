"""Learners: one file each, registered by name. ``metalearn list`` shows them all."""

from metalearn.learners import finetune, joint, pretrain_finetune  # noqa: F401  (registers them)
from metalearn.learners.base import (
    CLASSIFICATION,
    EPISODIC,
    Learner,
    LearnerContext,
    LearnerOptions,
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
    "available_learners",
    "check_compatible",
    "get_learner",
    "masked_cross_entropy",
    "register",
]
