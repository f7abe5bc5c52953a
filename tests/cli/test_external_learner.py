"""Learners from outside metalearn: the guide's example runs the full protocol, follows its own
guide, and installed plug-ins that are broken or named like a built-in cannot break the tool."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn.cli.config import load_config
from metalearn.cli.main import main
from metalearn.cli.runner import build_run, run
from metalearn.learners import available_learners, get_learner, registry

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.fixture
def replay_example(monkeypatch):
    """The guide's example, imported once per session as an outside module would be."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("replay_learner")


def test_the_guide_example_runs_through_the_protocol(replay_example, tiny_config, tmp_path):
    assert "replay_example" in available_learners()
    config = tiny_config(learner={"name": "replay_example", "options": {"per_task": 64}},
                         protocol={"steps_per_task": 60, "batch_size": 64})
    replay = run(load_config(config), run_dir=tmp_path / "replay")
    finetune = run(load_config(tiny_config(protocol={"steps_per_task": 60, "batch_size": 64})),
                   run_dir=tmp_path / "finetune")
    assert replay.completed_tasks == 5 and not np.isnan(replay.accuracy).any()
    # Replay remembers earlier tasks better than plain fine-tuning (class-IL).
    assert replay.metrics["acc"] > finetune.metrics["acc"] + 0.05


def test_the_guide_example_draws_nothing_from_the_global_generator(replay_example, tiny_config):
    _, scenario, learner, _ = build_run(load_config(tiny_config(
        learner={"name": "replay_example", "options": {"per_task": 8}})))
    stream = learner.context.stream
    for task in (0, 1):
        learner.begin_task(task)
        batch = next(stream.train_batches(scenario, [task], 16, torch.Generator(), seen=task + 1))
        before = torch.get_rng_state()
        learner.train_step(batch)  # on task 1 it replays from the buffer
        assert torch.equal(torch.get_rng_state(), before)
        learner.end_task(task)


# --- installed plug-ins, as real packages (a module and its dist-info) on sys.path ----------

CLASH = """
from metalearn.learners import EPISODIC, Learner

class Impostor(Learner):
    name = "maml"
    task_kinds = frozenset({EPISODIC})

    def train_step(self, batch):
        raise AssertionError("never trained")
"""


@pytest.fixture
def install(tmp_path, monkeypatch):
    """``install(package, module source, entry point value)``: a package installed for this test
    only, its learner entry point named ``package``; the registry is restored afterwards."""
    site = tmp_path / "site"
    monkeypatch.setattr(registry, "_CLAIMS", {k: dict(v) for k, v in registry._CLAIMS.items()})
    monkeypatch.syspath_prepend(str(site))
    modules = []

    def go(package: str, source: str, value: str) -> None:
        module = package.replace("-", "_")
        (site / f"{module}-1.0.dist-info").mkdir(parents=True)
        (site / f"{module}.py").write_text(source)
        (site / f"{module}-1.0.dist-info" / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
        (site / f"{module}-1.0.dist-info" / "entry_points.txt").write_text(
            f"[metalearn.learners]\n{package} = {module}:{value}\n")
        importlib.invalidate_caches()
        modules.append(module)

    yield go
    for module in modules:
        sys.modules.pop(module, None)


def run_finetune(config, tmp_path) -> int:
    return main(["run", str(config), "protocol.steps_per_task=2",
                 f"--run-dir={tmp_path / 'finetune'}"])


def test_a_plugin_that_fails_to_import_is_skipped_with_a_warning(install, tiny_config, tmp_path,
                                                                   capsys):
    install("broken-plugin", "import a_module_nobody_installed\n", "Learner")
    with pytest.warns(UserWarning, match=r"skipped the learner plug-in 'broken-plugin' of package "
                      r"broken-plugin \(broken_plugin:Learner\): ModuleNotFoundError: No module "
                      r"named 'a_module_nobody_installed'"):
        assert main(["list"]) == 0
    assert "finetune:" in capsys.readouterr().out
    with pytest.warns(UserWarning, match="broken-plugin"):
        assert run_finetune(tiny_config(), tmp_path) == 0


def test_a_plugin_that_is_not_a_learner_is_skipped_with_a_warning(install):
    install("not-a-learner", "def helper():\n    pass\n", "helper")
    with pytest.warns(UserWarning, match=r"'not-a-learner' of package not-a-learner .*TypeError: "
                      r"<function helper .*> is not a metalearn.learners.Learner subclass"):
        learners = available_learners()
    assert "finetune" in learners and "helper" not in learners


def test_a_plugin_named_like_a_built_in_is_refused_only_when_that_name_is_used(
        install, tiny_config, tmp_path, capsys):
    install("maml-clone", CLASH, "Impostor")
    both = (r"learner name 'maml' is claimed by metalearn.learners.maml \(built in\) and by "
            r"package maml-clone \(entry point maml-clone = maml_clone:Impostor\)")
    with pytest.warns(UserWarning, match=both):
        assert main(["list"]) == 0
    with pytest.warns(UserWarning, match=both):
        assert run_finetune(tiny_config(), tmp_path) == 0
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=both + "; rename the plug-in"):
        get_learner("maml")
    with pytest.warns(UserWarning):
        assert main(["run", str(tiny_config(learner={"name": "maml"}))]) == 1
    assert "error: learner name 'maml' is claimed by" in capsys.readouterr().err
