"""Fixtures: fresh copies of the hand-built run of ``sample_run``."""

from __future__ import annotations

from typing import Callable

import pytest

from metalearn.results import RunResults
from sample_run import complete, drive as drive_tracker, partial_results


@pytest.fixture
def partial() -> RunResults:
    return partial_results()


@pytest.fixture
def finished() -> RunResults:
    return complete(partial_results())


@pytest.fixture
def drive() -> Callable[..., RunResults]:
    return drive_tracker
