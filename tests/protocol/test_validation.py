"""Validation in the protocol and the choice of the tested state (issue 19)."""

import math

import numpy as np
import pydantic
import pytest
import torch
import torch.nn.functional as F

from metalearn.cli.config import ConfigError, load_config, validate_config
from metalearn.cli.main import main
from metalearn.cli.runner import run
from metalearn.learners import CLASSIFICATION, Learner, LearnerContext, Phase, get_learner
from metalearn.models import MLP
from metalearn.protocol import Protocol, ProtocolSettings, RunStopped
from metalearn.protocol.checkpoint import CheckpointError, load_checkpoint
from metalearn.results import RunResults
from metalearn.tasks import ClassificationTask, LabelledImages, Scenario, Stream
from metalearn.tracking import Tracker, load_results

PEAK = 3  # the step after which PeaksEarly gets worse
EXAMPLES = 10


def numbered_examples() -> LabelledImages:
    """Example k: label k % 2 in pixel (0, 0), its number k in pixel (0, 1)."""
    images = torch.zeros(EXAMPLES, 2, 2, dtype=torch.uint8)
    images[:, 0, 0] = torch.arange(EXAMPLES) % 2 * 255
    images[:, 0, 1] = torch.arange(EXAMPLES) * 20
    return LabelledImages(images, torch.arange(EXAMPLES) % 2)


class PeaksEarly(Learner):
    """A learner whose accuracy it controls: after s steps it predicts examples 0..c-1
    right and the rest wrong, c = s up to step PEAK and 2 * PEAK - s after it. Its values are
    its loss and its step count."""

    name = "test_peaks_early"
    task_kinds = frozenset({CLASSIFICATION})
    resumes_mid_task = True

    def __init__(self, model, options, context):
        super().__init__(model, options, context)
        self.steps = torch.zeros((), dtype=torch.int64)

    def train_step(self, batch):
        self.steps += 1
        return {"loss": 1.0 / self.steps.float(), "steps": self.steps.clone()}

    def predict(self, x, task_index):
        s = int(self.steps)
        right = torch.arange(EXAMPLES)[(x[:, 0, 0, 1] * 255 / 20).round().long()] < \
            (s if s <= PEAK else max(0, 2 * PEAK - s))
        label = (x[:, 0, 0, 0] > 0.5).long()
        return F.one_hot(torch.where(right, label, 1 - label), 2).float()

    def state_dict(self):
        return {"steps": self.steps.clone()}

    def load_state_dict(self, state):
        self.steps = state["steps"].clone()


class DrawsGlobally(PeaksEarly):
    """Trains and predicts with draws from the global random generator."""

    def train_step(self, batch):
        return {"loss": torch.rand(())}

    def predict(self, x, task_index):
        return torch.rand(len(x), 2)


def one_task(learner_class, tracker=None, validation=True, **settings):
    data = numbered_examples()
    task = ClassificationTask("t0", 2, data, data, validation=data if validation else None)
    stream = Stream("tiny", (task,), frozenset(Scenario))
    context = LearnerContext(stream, Scenario.DOMAIN, torch.device("cpu"), seed=0)
    learner = learner_class(torch.nn.Identity(), learner_class.Options(), context)
    results = RunResults.empty("tiny", learner_class.name, "domain", 0, ["t0"], [EXAMPLES],
                               episodic=False)
    settings = {"steps_per_task": 2 * PEAK, "batch_size": 4, "log_every": 2, **settings}
    protocol = Protocol(stream, Scenario.DOMAIN, learner, ProtocolSettings(**settings), 0,
                        tracker or Tracker())
    return protocol, results


def test_best_validation_tests_the_early_state_when_validation_accuracy_falls(tmp_path):
    protocol, results = one_task(PeaksEarly, validate_every=1, select="best_validation")
    protocol.run(results, tmp_path)
    assert results.validation_curves == {"t0": [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.2),
                                                (5, 0.1), (6, 0.0)]}
    assert results.accuracy[0, 0] == pytest.approx(0.3)  # the state of step 3, tested
    assert results.selection == [{"rule": "best_validation", "step": PEAK,
                                  "validation_accuracy": pytest.approx(0.3)}]
    assert results.metrics["val_acc"] == pytest.approx(0.3)
    assert results.task_end_steps == [2 * PEAK]
    best = load_checkpoint(tmp_path / "best.pt", holds=("learner", "step"))
    assert (best["task"], best["step"], int(best["learner"]["steps"])) == (0, PEAK, PEAK)


class PeaksInFirstPhase(PeaksEarly):
    """PeaksEarly whose task is two phases: ``train`` up to the peak, ``polish`` after it."""

    def phases(self, task_index, steps):
        return [Phase("train", PEAK), Phase("polish", steps - PEAK)]


def test_phases_are_validated_at_their_ends_and_selection_keeps_the_last_phases_best(tmp_path):
    protocol, results = one_task(PeaksInFirstPhase, validate_every=4, select="best_validation")
    protocol.run(results, tmp_path)
    assert results.validation_curves == {"t0": [(3, 0.3), (4, 0.2), (6, 0.0)]}
    assert results.selection == [{"rule": "best_validation", "step": PEAK + 1,
                                  "validation_accuracy": pytest.approx(0.2)}]
    assert results.accuracy[0, 0] == pytest.approx(0.2)  # not the first phase's better 0.3
    assert [step for step, _ in results.curves["loss"]] == [2, 3]
    assert [step for step, _ in results.curves["polish/loss"]] == [4, 6]
    assert {"train_s/task_0", "polish_s/task_0"} <= set(results.timings)
    assert protocol.total_steps() == 2 * PEAK


def test_last_tests_the_last_state_and_records_its_validation(tmp_path):
    protocol, results = one_task(PeaksEarly, validate_every=4)
    protocol.run(results, tmp_path)
    assert results.validation_curves == {"t0": [(4, 0.2), (6, 0.0)]}  # and at the task's end
    assert results.accuracy[0, 0] == 0.0
    assert results.selection == [{"rule": "last", "step": 6, "validation_accuracy": 0.0}]
    assert results.metrics["val_acc"] == 0.0
    assert not (tmp_path / "best.pt").exists()


def test_curves_hold_every_value_train_step_returns(tmp_path):
    protocol, results = one_task(PeaksEarly)
    protocol.run(results, tmp_path)
    assert results.curves["steps"] == [(2, 1.5), (4, 3.5), (6, 5.5)]  # means over log_every
    assert results.curves["loss"] == [(2, pytest.approx(0.75)), (4, pytest.approx(7 / 24)),
                                      (6, pytest.approx(11 / 60))]
    assert results.validation_curves == {} and results.selection == [
        {"rule": "last", "step": 6, "validation_accuracy": None}]
    assert "val_acc" not in results.metrics


def test_validation_leaves_training_and_results_unchanged_under_last(tmp_path):
    runs = []
    for validate_every in (0, 1):
        protocol, results = one_task(DrawsGlobally, validate_every=validate_every)
        torch.manual_seed(0)
        protocol.run(results, tmp_path / str(validate_every))
        runs.append(results)
    off, on = runs
    assert on.validation_curves and not off.validation_curves
    assert on.curves == off.curves  # the same global draws in training
    assert (on.accuracy == off.accuracy).all() and (on.initial_accuracy == off.initial_accuracy).all()


class StopsAtValidation(Tracker):
    def __init__(self, step):
        self.step = step

    def log_validation(self, task_index, global_step, accuracies):
        if global_step == self.step:
            raise RunStopped("SIGTERM")


def test_a_resume_keeps_the_best_state_and_the_validation_curves(tmp_path):
    settings = {"validate_every": 1, "select": "best_validation", "checkpoint_every": 2,
                "log_every": 1}
    protocol, whole = one_task(PeaksEarly, **settings)
    protocol.run(whole, tmp_path / "whole")

    protocol, stopped = one_task(PeaksEarly, StopsAtValidation(5), **settings)
    with pytest.raises(RunStopped):  # after the checkpoint at step 4: the best, step 3, is before
        protocol.run(stopped, tmp_path / "stopped")
    state = load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")
    assert state["task_step"] == 4 and state["best_validation"]["step"] == PEAK
    protocol, resumed = one_task(PeaksEarly, **settings)
    protocol.restore(state, resumed)
    protocol.run(resumed, tmp_path / "stopped")
    assert resumed.accuracy[0, 0] == pytest.approx(0.3)
    for key in ("validation_curves", "curves", "selection", "task_end_steps", "metrics"):
        assert resumed.to_dict()[key] == whole.to_dict()[key], key
    assert (resumed.accuracy == whole.accuracy).all()


def test_a_resume_without_the_best_state_it_records_says_so(tmp_path):
    settings = {"validate_every": 1, "select": "best_validation", "checkpoint_every": 2,
                "log_every": 1}
    protocol, stopped = one_task(PeaksEarly, StopsAtValidation(5), **settings)
    with pytest.raises(RunStopped):
        protocol.run(stopped, tmp_path)
    (tmp_path / "best.pt").unlink()
    protocol, resumed = one_task(PeaksEarly, **settings)
    protocol.restore(load_checkpoint(tmp_path / "checkpoint.pt"), resumed)
    with pytest.raises(CheckpointError, match="best.pt is missing: the checkpoint beside it "
                                                "records the best validation state of task 0"):
        protocol.run(resumed, tmp_path)


def test_selection_without_validation_is_refused_naming_both_settings():
    with pytest.raises(pydantic.ValidationError,
                       match="select=best_validation .* protocol.validate_every is 0"):
        ProtocolSettings(steps_per_task=1, select="best_validation")
    with pytest.raises(pydantic.ValidationError, match="validate_every"):
        ProtocolSettings(steps_per_task=1, validate_every=-1)
    with pytest.raises(pydantic.ValidationError, match="select"):
        ProtocolSettings(steps_per_task=1, select="best")


def test_validation_of_tasks_without_validation_data_names_the_option(tmp_path):
    protocol, results = one_task(PeaksEarly, validation=False, validate_every=1)
    with pytest.raises(ValueError, match=r"'t0' of tiny have no validation set: hold out part "
                                         r"of the training set with benchmark.options.validation"):
        protocol.run(results, tmp_path)
    assert not any(tmp_path.iterdir())


def base_config(**protocol):
    return {"benchmark": {"name": "split_mnist"}, "learner": {"name": "finetune"},
            "model": {"name": "mlp"}, "protocol": {"steps_per_task": 5, **protocol},
            "scenario": "class"}


def test_runs_started_before_validation_keep_their_names_and_resume():
    config = validate_config(base_config())
    assert config.fingerprint() == "dc5998"  # as computed at commit 2b1b05a, before them
    assert config.changes_since(config.result_settings()) == []
    assert validate_config(base_config(select="last", validation_episodes=100)).fingerprint() \
        == config.fingerprint()
    validating = validate_config(base_config(validate_every=5))
    assert validating.fingerprint() != config.fingerprint()
    assert validating.changes_since(config.result_settings()) == [
        "protocol.validate_every (was None, now 5)"]


def test_a_config_asking_for_selection_without_validation_is_one_error(tiny_config):
    with pytest.raises(ConfigError, match="protocol.select=best_validation"):
        load_config(tiny_config(), ["protocol.select=best_validation"])


def test_split_mnist_validation_curves_leave_the_run_as_it_was(tiny_config):
    off = run(load_config(tiny_config(), ["benchmark.options.validation=0.1"]))
    on = run(load_config(tiny_config(), ["benchmark.options.validation=0.1",
                                         "protocol.validate_every=10"]))
    assert (on.accuracy == off.accuracy).all() and on.curves == off.curves
    assert list(on.validation_curves) == on.task_names
    # every task at steps 10 and 20 of each of the 5 tasks
    assert [step for step, _ in on.validation_curves["0/1"]] == list(range(10, 101, 10))
    assert on.task_end_steps == [20, 40, 60, 80, 100]
    last_points = [curve[-1][1] for curve in on.validation_curves.values()]
    assert on.metrics["val_acc"] == pytest.approx(sum(last_points) / 5)
    assert not math.isnan(on.selection[-1]["validation_accuracy"])


@pytest.mark.slow
def test_validation_over_two_processes_selects_as_one_does(tiny_config, tmp_path):
    config = tiny_config(benchmark={"name": "split_mnist", "options": {"validation": 0.1}},
                         protocol={"steps_per_task": 20, "batch_size": 64, "eval_batch_size": 2048,
                                   "validate_every": 5, "select": "best_validation"})
    assert main(["run", str(config), "--run-dir", str(tmp_path / "two"), "--nproc", "2"]) == 0
    one = run(load_config(config), run_dir=tmp_path / "one")
    shared = load_results(tmp_path / "two")
    assert [s["step"] for s in shared.selection] == [s["step"] for s in one.selection]
    for name, curve in one.validation_curves.items():  # float32 sums: a flipped example at most
        other = shared.validation_curves[name]
        assert [step for step, _ in other] == [step for step, _ in curve]
        assert np.allclose([a for _, a in other], [a for _, a in curve], atol=1.01 / 1000)  # >= 1000 examples a task
    assert (tmp_path / "two" / "best.pt").is_file()


def test_the_lstm_optimizer_is_validated_on_the_optimisee_it_trains(tmp_path):
    images = torch.randint(0, 256, (64, 4, 4), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    data = LabelledImages(images, (images[:, 0, 0] > 127).long())
    stream = Stream("tiny", (ClassificationTask("t0", 2, data, data, validation=data),),
                    frozenset(Scenario))
    context = LearnerContext(stream, Scenario.DOMAIN, torch.device("cpu"), seed=0)
    learner_class = get_learner("lstm_optimizer")
    learner = learner_class(MLP(16, 2, hidden=(8,)),
                            learner_class.Options(unroll=2, horizon=8, output_scale=1.0), context)
    results = RunResults.empty("tiny", "lstm_optimizer", "domain", 0, ["t0"], [64], episodic=False)
    settings = ProtocolSettings(steps_per_task=8, batch_size=16, validate_every=4, log_every=2)
    Protocol(stream, Scenario.DOMAIN, learner, settings, 0, Tracker()).run(results, tmp_path)
    # the last step's validation scores the model the task ends with (not the optimisee's
    # initial weights, which the model holds while an optimisee trains), on the same data
    assert results.validation_curves["t0"][-1] == (8, results.accuracy[0, 0])


def test_an_untested_run_reads_validation_data_only_and_scores_it_alone(tmp_path, monkeypatch):
    splits = []
    evaluate = Protocol.evaluate
    monkeypatch.setattr(Protocol, "evaluate",
                        lambda self, j, seen, split="test": splits.append(split) or evaluate(self, j, seen, split))
    protocol, results = one_task(PeaksEarly, validate_every=4, test=False)
    protocol.run(results, tmp_path)
    assert splits == ["validation"] * 3  # at step 4, the task's end and the run's: no test data
    assert results.metrics == {"val_acc": 0.0}
    assert np.isnan(results.accuracy).all() and np.isnan(results.initial_accuracy).all()
    tested, tested_results = one_task(PeaksEarly, validate_every=4)
    tested.run(tested_results, tmp_path / "tested")
    assert "test" in splits and tested_results.metrics["val_acc"] == 0.0


def test_an_untested_run_without_validation_is_refused_naming_both_settings():
    with pytest.raises(pydantic.ValidationError, match="protocol.test=false reads no test data, and protocol.validate_every is 0"):
        ProtocolSettings(steps_per_task=1, test=False)
