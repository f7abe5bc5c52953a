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
        train_step, begin_task = learner_class.train_step, learner_class.begin_task
        begun: list[int] = []  # the tasks begun, in order
        steps_in_task = {"n": 0}

        def begin(self, task_index):
            begun.append(task_index)
            steps_in_task["n"] = 0
            return begin_task(self, task_index)

        def killed_in_task_three(self, batch):
            steps_in_task["n"] += 1
            if begun[-1] == 2 and steps_in_task["n"] == KILLED_AT_STEP and len(begun) == 3:
                raise KeyboardInterrupt
            return train_step(self, batch)

        monkeypatch.setattr(learner_class, "begin_task", begin)
        monkeypatch.setattr(learner_class, "train_step", killed_in_task_three)
        with pytest.raises(KeyboardInterrupt):
            run(config, run_dir=tmp_path / "killed")
        resumed = run(config, run_dir=tmp_path / "killed", resume=True)
        n_tasks = len(resumed.task_names)
        assert begun == [0, 1, 2, *range(2, n_tasks)], "the resume did not start at task 3"
        return resumed

    return go
