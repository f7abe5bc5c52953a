"""Learners by name: the built-in ones, ones registered in code, and installed plug-ins.

A package outside metalearn adds learners without editing it by declaring an entry point in
the ``metalearn.learners`` group whose value is the learner class, e.g. in its setup.cfg::

    [options.entry_points]
    metalearn.learners =
        my_learner = my_package.my_learner:MyLearner

A plug-in cannot break the tool: one that fails to load is skipped with a warning naming its
package, and a name claimed by two learners (a plug-in named like a built-in) is refused only
when a run asks for it, naming both.
"""

from __future__ import annotations

import difflib
import warnings
from importlib.metadata import EntryPoint, entry_points

from metalearn.learners.base import Learner

ENTRY_POINT_GROUP = "metalearn.learners"
# Every learner that claimed each name, with where it comes from; one claim per name is usable.
_CLAIMS: dict[str, dict[type[Learner], str]] = {}


def register(learner: type[Learner]) -> type[Learner]:
    """Class decorator: make ``learner`` available by its ``name``. A name two learners
    register is refused when a run asks for it (``get_learner``), naming both."""
    origin = "built in" if learner.__module__.startswith("metalearn.") else "registered in code"
    _CLAIMS.setdefault(learner.name, {}).setdefault(learner, f"{learner.__module__} ({origin})")
    return learner


def _load_plugin(entry: EntryPoint) -> None:
    """Register the learner class an entry point names, or warn (naming its package) and skip it."""
    package = entry.dist.name if entry.dist else "unknown"
    try:
        learner = entry.load()
        if not (isinstance(learner, type) and issubclass(learner, Learner)):
            raise TypeError(f"{learner!r} is not a metalearn.learners.Learner subclass")
        register(learner)  # a class without a ``name`` fails here
    except Exception as error:  # any failure of foreign code: the tool must go on
        warnings.warn(f"skipped the learner plug-in {entry.name!r} of package {package} "
                      f"({entry.value}): {type(error).__name__}: {error}. Fix the package or "
                      f"uninstall it (pip uninstall {package})", stacklevel=3)
        return
    _CLAIMS[learner.name][learner] = f"package {package} (entry point {entry.name} = {entry.value})"


def _clash(name: str) -> str:
    return (f"learner name {name!r} is claimed by {' and by '.join(_CLAIMS[name].values())}; "
            "rename the plug-in's learner (its class attribute `name`) or uninstall the package")


def available_learners() -> dict[str, type[Learner]]:
    """Every usable learner by name, installed plug-ins included; a name two learners claim is
    left out, with a warning."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _load_plugin(entry)
    learners = {}
    for name, claims in sorted(_CLAIMS.items()):
        if len(claims) == 1:
            learners[name] = next(iter(claims))
        else:
            warnings.warn(_clash(name), stacklevel=2)
    return learners


def get_learner(name: str) -> type[Learner]:
    """The learner called ``name``; an error if no learner or more than one claims it."""
    learners = available_learners()
    if name in _CLAIMS and name not in learners:
        raise ValueError(_clash(name))
    if name not in learners:
        close = difflib.get_close_matches(name, learners, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown learner {name!r}{hint} Known learners: {sorted(learners)}")
    return learners[name]
