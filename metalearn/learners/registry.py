"""Learners by name: the built-in ones, ones registered in code, and installed plug-ins.

A package outside metalearn adds learners without editing it by declaring an entry point in
the ``metalearn.learners`` group whose value is the learner class, e.g. in its setup.cfg::

    [options.entry_points]
    metalearn.learners =
        my_learner = my_package.my_learner:MyLearner
"""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points

from metalearn.learners.base import Learner

ENTRY_POINT_GROUP = "metalearn.learners"
_REGISTRY: dict[str, type[Learner]] = {}


def register(learner: type[Learner]) -> type[Learner]:
    """Class decorator: make ``learner`` available by its ``name``."""
    existing = _REGISTRY.get(learner.name)
    if existing is not None and existing is not learner:
        raise ValueError(f"a learner named {learner.name!r} is already registered ({existing})")
    _REGISTRY[learner.name] = learner
    return learner


def available_learners() -> dict[str, type[Learner]]:
    """Every learner by name, installed plug-ins included."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _REGISTRY:
            register(entry.load())
    return dict(sorted(_REGISTRY.items()))


def get_learner(name: str) -> type[Learner]:
    learners = available_learners()
    if name not in learners:
        close = difflib.get_close_matches(name, learners, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown learner {name!r}{hint} Known learners: {sorted(learners)}")
    return learners[name]
