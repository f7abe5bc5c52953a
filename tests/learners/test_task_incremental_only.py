"""Learners that choose their weights by the task's identity (PackNet, Progressive Neural
Networks, CPG) refuse domain- and class-incremental runs before training, with the reason."""

import pytest

from metalearn.cli.config import load_config
from metalearn.cli.runner import run


@pytest.mark.parametrize("learner", ["packnet", "progressive", "cpg"])
@pytest.mark.parametrize("scenario", ["domain", "class"])
def test_domain_and_class_incremental_runs_are_refused_before_training_with_the_reason(
        learner, scenario, tiny_config, tmp_path):
    config = load_config(tiny_config(learner={"name": learner}, scenario=scenario))
    with pytest.raises(ValueError, match=rf"'{learner}' supports the scenarios \['task'\], not "
                                         rf"'{scenario}': it needs the task's identity at test"):
        run(config, run_dir=tmp_path / scenario)
    assert not (tmp_path / scenario / "checkpoint.pt").exists()
