"""Learners: one file each, registered by name. ``metalearn list`` shows them all.

Every module of this package is imported here, so a new learner is one new file: its
``@register`` runs on import, with no list to edit.
"""

import importlib
import pkgutil

from metalearn.learners.base import (
    CLASSIFICATION,
    EPISODIC,
    Learner,
    LearnerContext,
    LearnerOptions,
    Phase,
    adam,
    check_compatible,
    masked_cross_entropy,
)
from metalearn.learners.registry import available_learners, get_learner, register

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "CLASSIFICATION",
    "EPISODIC",
    "Learner",
    "LearnerContext",
    "LearnerOptions",
    "Phase",
    "adam",
    "available_learners",
    "check_compatible",
    "get_learner",
    "masked_cross_entropy",
    "register",
]
