"""Shared by the learner tests: a run killed in its third task and resumed."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalearn.cli.config import RunConfig
from metalearn.cli.runner import run
from metalearn.learners import get_learner
from metalearn.results import RunResults

KILLED_AT_STEP = 12  # of task index 2


@pytest.fixture
def killed_and_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``config`` until step 12 of task index 2, kill it there, resume it; its results.

    Fails unless the resumed run starts again at task index 2, from its checkpoint.
    """
    def go(config: RunConfig) -> RunResults:
        learner_class = get_learner(config.learner.name)
        original = learner_class.train_step
        steps, calls = config.protocol.steps_per_task, {"n": 0}
        kill_at = 2 * steps + KILLED_AT_STEP

        def killed_in_task_three(self, batch):
            calls["n"] += 1
            if calls["n"] == kill_at:
                raise KeyboardInterrupt
            return original(self, batch)

        monkeypatch.setattr(learner_class, "train_step", killed_in_task_three)
        with pytest.raises(KeyboardInterrupt):
            run(config, run_dir=tmp_path / "killed")
        resumed = run(config, run_dir=tmp_path / "killed", resume=True)
        n_tasks = len(resumed.task_names)
        assert calls["n"] == kill_at + (n_tasks - 2) * steps, "the resume did not start at task 3"
        return resumed

    return go
