"""The learner guide's example, defined outside the metalearn package, runs the full protocol."""

import importlib.util
from pathlib import Path

import numpy as np

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import available_learners

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "replay_learner.py"


def test_the_guide_example_runs_through_the_protocol(tiny_config, tmp_path):
    spec = importlib.util.spec_from_file_location("replay_learner", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "replay_example" in available_learners()
    config = tiny_config(learner={"name": "replay_example", "options": {"per_task": 64}},
                         protocol={"steps_per_task": 60, "batch_size": 64})
    replay = run(load_config(config), run_dir=tmp_path / "replay")
    finetune = run(load_config(tiny_config(protocol={"steps_per_task": 60, "batch_size": 64})),
                   run_dir=tmp_path / "finetune")
    assert replay.completed_tasks == 5 and not np.isnan(replay.accuracy).any()
    # Replay remembers earlier tasks better than plain fine-tuning (class-IL).
    assert replay.metrics["acc"] > finetune.metrics["acc"] + 0.05
