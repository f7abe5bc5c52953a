"""The one training and evaluation loop every learner runs through.

For a stream of T tasks: evaluate every task before training (b), then for each task i train
on it, evaluate all T tasks (row i of R, tasks not seen yet included), record what the learner
reports (numbers and images), checkpoint, report to the tracker.
The loop is the same for continual streams and few-shot benchmarks (a stream of one episodic
task); only how a task is trained on and scored differs, and that is decided by the task's
kind, never by the learner's name.
"""

from __future__ import annotations

import copy
import itertools
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Literal

import numpy as np
import pydantic
import torch

from metalearn import distributed
from metalearn.learners import Learner, Phase
from metalearn.protocol.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metalearn.protocol.metrics import few_shot_accuracy, summarize
from metalearn.protocol.stopping import RunStopped, StopSignals
from metalearn.results import RunResults
from metalearn.seeding import reserved
from metalearn.tasks import (
    Batch,
    EpisodeBatch,
    EpisodeSampler,
    EvaluationEpisodes,
    Scenario,
    Stream,
)

if TYPE_CHECKING:  # the protocol only calls a tracker's methods
    from metalearn.tracking import Tracker


class ProtocolSettings(pydantic.BaseModel):
    """How long to train and how to sample; the ``protocol`` section of a run's config."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    steps_per_task: int = pydantic.Field(ge=1)
    batch_size: int = pydantic.Field(128, ge=1)  # classification minibatch
    eval_batch_size: int = pydantic.Field(1000, ge=1)  # classification test batch
    n_way: int = pydantic.Field(5, ge=2)  # few-shot episodes, for training and evaluation
    k_shot: int = pydantic.Field(1, ge=1)
    q_query: int = pydantic.Field(15, ge=1)
    meta_batch_size: int = pydantic.Field(32, ge=1)
    eval_episodes: int = pydantic.Field(600, ge=2)  # a confidence interval needs two
    eval_meta_batch_size: int = pydantic.Field(100, ge=1)
    eval_seed: int = 0  # the same evaluation episodes for every learner and run seed
    log_every: int = pydantic.Field(10, ge=1)  # training steps averaged into one curve point
    # Steps between checkpoints inside a task, for learners that can resume there (long
    # one-task runs: meta-training); 0 checkpoints only after each task.
    checkpoint_every: int = pydantic.Field(1000, ge=0)
    # Training steps between scorings of the validation data (and at the end of each task);
    # 0: no validation.
    validate_every: int = pydantic.Field(0, ge=0)
    validation_episodes: int = pydantic.Field(100, ge=1)  # few-shot, drawn from eval_seed
    select: Literal["last", "best_validation"] = "last"  # the state of a task that is tested
    # False: the test data are never read (R and b stay empty; the metrics are the validation
    # score alone), for runs whose only reader is a search (an architecture search's candidates)
    test: bool = True

    # Settings added after run names and checkpoints were made from these settings: left out
    # of a run's result settings while at these values, so runs started before keep their
    # names and resume.
    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {
        "validate_every": 0, "validation_episodes": 100, "select": "last", "test": True}

    @pydantic.model_validator(mode="after")
    def _whole_curve_points(self) -> ProtocolSettings:
        """A resumed run's learning curve is the uninterrupted one's only if checkpoints fall
        between learning-curve points."""
        if self.checkpoint_every % self.log_every:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of "
                             f"log_every ({self.log_every}), or 0")
        return self

    @pydantic.model_validator(mode="after")
    def _selection_needs_validation(self) -> ProtocolSettings:
        if self.select == "best_validation" and not self.validate_every:
            raise ValueError("protocol.select=best_validation tests the state of best validation "
                             "accuracy, but protocol.validate_every is 0 (no validation): set "
                             "protocol.validate_every to the training steps between validations, "
                             "or protocol.select=last")
        return self

    @pydantic.model_validator(mode="after")
    def _untested_needs_validation(self) -> ProtocolSettings:
        if not self.test and not self.validate_every:
            raise ValueError("protocol.test=false reads no test data, and protocol.validate_every "
                             "is 0 (no validation): the run would score nothing. Set "
                             "protocol.validate_every to the training steps between validations")
        return self

    def later_settings_at_default(self) -> set[str]:
        """The settings of ``LATER_DEFAULTS`` left at their value there."""
        return {name for name, value in self.LATER_DEFAULTS.items()
                if getattr(self, name) == value}


BEST_FILE = "best.pt"  # beside checkpoint.pt: the best validation state of the current task


class NonFiniteLossError(RuntimeError):
    """A training value or the learner's state became NaN or infinite; results up to the last
    task and the last checkpoint are kept, and no checkpoint ever holds a non-finite value."""


@dataclass
class BestState:
    """The learner's state of best validation score so far while training on ``task``."""

    task: int
    step: int  # the global step it was scored at
    score: float
    learner: dict


class Protocol:
    """Runs ``learner`` through ``stream`` and fills in a :class:`RunResults`.

    ``run_settings`` (the run's result-determining settings, as text) goes into every
    checkpoint, so a resume can check that it continues the same run.
    """

    def __init__(self, stream: Stream, scenario: Scenario | None, learner: Learner,
                 settings: ProtocolSettings, seed: int, tracker: Tracker,
                 run_settings: str = "") -> None:
        self.stream, self.scenario, self.learner = stream, scenario, learner
        self.settings, self.seed, self.tracker = settings, seed, tracker
        self.run_settings = run_settings
        self._evaluation_episodes: dict[tuple[int, str], EvaluationEpisodes] = {}
        self._global_step = self._task_step = 0  # where training starts: 0, or a checkpoint's
        self._stop = StopSignals()
        self._best: BestState | None = None  # under select=best_validation, of the current task
        self._best_record: dict | None = None  # a checkpoint's record of it, until run() loads it
        self._last_validation: tuple[int, float] | None = None  # (global step, score)

    def restore(self, state: dict, results: RunResults) -> None:
        """Continue from a checkpoint's ``state``: the learner, the results (filled in place),
        the random state and the step. Nothing is changed if the learner does not fit."""
        self.learner.load_state_dict(state["learner"])
        vars(results).update(vars(RunResults.from_dict(state["results"])))
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self._global_step, self._task_step = state["global_step"], state.get("task_step", 0)
        self._best_record = state.get("best_validation")

    def run(self, results: RunResults, run_dir: Path) -> RunResults:
        """Train on every task not yet completed, checkpointing into ``run_dir`` after each
        (and every ``checkpoint_every`` steps within a task, for learners that resume there).

        ``results`` is filled in place, so a caller holds the partial results if a run stops.
        SIGINT and SIGTERM stop the run at the next step or evaluation with :class:`RunStopped`.
        Over several processes (metalearn.distributed) each process trains on its share of each
        batch and evaluates its share of the episodes; rank 0 alone writes checkpoints.
        """
        self._check_validation_data()
        with self._stop:
            try:
                self._load_best(run_dir / BEST_FILE, results)
                return self._run(results, run_dir / "checkpoint.pt")
            except (RunStopped, distributed.ProcessLost) as stop:
                stop.run_dir = run_dir
                raise

    def _run(self, results: RunResults, checkpoint: Path) -> RunResults:
        global_step, task_step = self._global_step, self._task_step
        if self.settings.test and np.isnan(results.initial_accuracy).any():
            results.initial_accuracy[:] = [self._checked_evaluation(j, 0)[0]
                                           for j in range(len(self.stream))]
            self.tracker.log_task(-1, results)

        for i in range(results.completed_tasks, len(self.stream)):
            global_step = self._train_task(i, task_step, global_step, results, checkpoint)
            task_step = 0
            learner_state = self._check_finite_state(
                f"after training on task {i} ({self.stream[i].name!r})", results, checkpoint)
            if self.settings.test:
                self._test(i, results)
            images = self._record_report(i, results)
            results.completed_tasks = i + 1
            self._save(checkpoint, results, global_step, learner_state=learner_state)
            self.tracker.log_task(i, results)
            if images:
                self.tracker.log_images(i, images)

        results.metrics = self._metrics(results) if self.settings.test else {}
        if self.settings.validate_every:  # what tuning reads: the tested states on validation data
            accuracies = self._validation_accuracies(seen=len(self.stream))
            results.metrics["val_acc"] = float(np.mean(list(accuracies.values())))
        return results

    def _test(self, i: int, results: RunResults) -> None:
        """Row i of R (and of the CIs): every task's test accuracy after training on task i."""
        start = time.perf_counter()
        row = [self._checked_evaluation(j, i + 1) for j in range(len(self.stream))]
        results.accuracy[i] = [accuracy for accuracy, _ in row]
        if results.interval is not None:
            results.interval[i] = [interval for _, interval in row]
        results.timings[f"eval_s/task_{i}"] = time.perf_counter() - start

    def _check_validation_data(self) -> None:
        """With validation on, every task must hold validation data: say which do not."""
        if not self.settings.validate_every:
            return
        missing = [task.name for task in self.stream if task.validation is None]
        if missing:
            fix = ("use a benchmark whose pools include a validation split" if self.stream.episodic
                   else "hold out part of the training set with benchmark.options.validation "
                        "(e.g. 0.1)")
            raise ValueError(
                f"protocol.validate_every={self.settings.validate_every} scores each task's "
                f"validation data, but {', '.join(map(repr, missing))} of {self.stream.name} have "
                f"no validation {'classes' if self.stream.episodic else 'set'}: {fix}, or set "
                "protocol.validate_every=0")

    def _validation_accuracies(self, seen: int) -> dict[str, float]:
        """Accuracy on every task's validation data, by task name. The global random state is
        kept as it was, so validation never changes what training draws."""
        devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            return {task.name: self._checked_evaluation(j, seen, "validation")[0]
                    for j, task in enumerate(self.stream)}

    def _validate(self, i: int, global_step: int, results: RunResults, checkpoint: Path) -> float:
        """Score the validation data of every task while training on task i, log the points,
        and under select=best_validation keep the state if it scores best in task i so far;
        returns the seconds it took. The score is task i's validation accuracy for a few-shot
        task, the mean over tasks 0..i for a continual stream."""
        start = time.perf_counter()
        accuracies = self._validation_accuracies(seen=i + 1)
        for name, accuracy in accuracies.items():
            results.validation_curves.setdefault(name, []).append((global_step, accuracy))
        self.tracker.log_validation(i, global_step, accuracies)
        score = float(np.mean(list(accuracies.values())[: i + 1]))
        self._last_validation = (global_step, score)
        if self.settings.select == "best_validation" and (
                self._best is None or self._best.task != i or score > self._best.score):
            state = self._check_finite_state(f"at step {global_step} of task {i}", results,
                                             checkpoint)
            self._best = BestState(i, global_step, score, copy.deepcopy(state))
            if distributed.is_main():
                save_checkpoint(checkpoint.parent / BEST_FILE, {
                    "task": i, "step": global_step, "score": score, "learner": state})
        seconds = time.perf_counter() - start
        results.timings[f"validation_s/task_{i}"] = \
            results.timings.get(f"validation_s/task_{i}", 0.0) + seconds
        return seconds

    def _load_best(self, path: Path, results: RunResults) -> None:
        """On a resume inside a task, the best state so far from ``path``, if the checkpoint
        recorded one for this task. ``path`` may be newer than the checkpoint (a better state
        found after it): the steps replayed after the checkpoint then find it again."""
        record = self._best_record
        if not (self._task_step and record and record["task"] == results.completed_tasks):
            return

        def read() -> dict:
            if not path.is_file():
                raise CheckpointError(
                    f"{path} is missing: the checkpoint beside it records the best validation "
                    f"state of task {record['task']} at step {record['step']} there. Restore the "
                    "file, or start the run again")
            return load_checkpoint(path, self.learner.context.device, holds=("learner", "step"))
        best = distributed.on_main(read)
        self._best = BestState(best["task"], best["step"], best["score"], best["learner"])

    def _select(self, i: int, global_step: int, results: RunResults) -> None:
        """Load the state to test for task i (select=best_validation: the best-scoring one) and
        record which it is in ``results.selection``."""
        best = self._best
        if best is not None and best.task == i:
            if best.step != global_step:
                self.learner.load_state_dict(best.learner)
            results.selection.append({"rule": "best_validation", "step": best.step,
                                      "validation_accuracy": best.score})
        else:
            validated = self._last_validation is not None and self._last_validation[0] == global_step
            results.selection.append({"rule": "last", "step": global_step,
                                      "validation_accuracy": self._last_validation[1]
                                      if validated else None})
        self._best = None

    def _checked_evaluation(self, j: int, seen: int,
                            split: Literal["test", "validation"] = "test") -> tuple[float, float | None]:
        """Evaluate task j, then stop here if a stop was requested meanwhile."""
        evaluation = self.evaluate(j, seen, split)
        self._check_stop()
        return evaluation

    def _check_stop(self) -> None:
        """Raise RunStopped if this process or another was asked to stop, so that every process
        stops at the same step (each gets the signal at its own moment)."""
        received = self._stop.received
        number = distributed.largest(signal.Signals[received].value if received else 0)
        if number:
            raise RunStopped(signal.Signals(number).name)

    def _save(self, checkpoint: Path, results: RunResults, global_step: int,
              task_step: int = 0, learner_state: dict | None = None) -> None:
        """Everything to resume from here: after a task (with the ``learner_state`` checked
        when its training ended: evaluation leaves it as it is), or ``task_step`` steps into
        the next (the state is checked here)."""
        if learner_state is None:
            learner_state = self._check_finite_state(
                f"at step {task_step} of task {results.completed_tasks}", results, checkpoint)
        if not distributed.is_main():  # the others hold the same state
            return
        save_checkpoint(checkpoint, {
            "learner": learner_state, "results": results.to_dict(),
            "rng": torch.get_rng_state(), "global_step": global_step, "task_step": task_step,
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "run_settings": self.run_settings, "processes": distributed.world_size(),
            "best_validation": None if self._best is None else
            {"task": self._best.task, "step": self._best.step, "score": self._best.score},
        })

    def _check_finite_state(self, where: str, results: RunResults, checkpoint: Path) -> dict:
        """The learner's state, or NonFiniteLossError naming the first NaN or infinite entry:
        a diverged learner is never evaluated as a result nor written into a checkpoint."""
        state = self.learner.state_dict()
        bad = _first_non_finite(state)
        if bad is not None:
            raise NonFiniteLossError(
                f"the learner's state {bad} holds NaN or infinite values {where}, although the "
                f"loss was finite. Results of the {results.completed_tasks} completed task(s) "
                f"and the last good checkpoint are kept in {checkpoint.parent}. Lower the "
                "learning rate or check the inputs, then run again.")
        return state

    def total_steps(self) -> int:
        """Training steps of the whole run, every phase of every task."""
        return sum(phase.steps for i in range(len(self.stream))
                   for phase in self.learner.phases(i, self.settings.steps_per_task))

    def _train_task(self, i: int, first_step: int, global_step: int, results: RunResults,
                    checkpoint: Path) -> int:
        """Train on task i, phase after phase, from step ``first_step`` of the task (0, or where
        a mid-task checkpoint left off: the batches before it are drawn again and skipped, so
        the rest are the same). Under select=best_validation the state tested is the best of
        the task's last phase: an earlier phase's state misses what the later ones did."""
        self.learner.begin_task(i)
        protocol_batches = None  # the task's minibatches or episodes, continued across phases
        phase_start = 0
        for phase in self.learner.phases(i, self.settings.steps_per_task):
            if first_step < phase_start + phase.steps:
                if first_step <= phase_start:  # a resume inside the phase keeps its best so far
                    self._best = None
                self.learner.begin_phase(i, phase.name)
                batches = self.learner.training_batches(i, phase.name)
                if batches is None:
                    if protocol_batches is None:
                        protocol_batches = self._training_batches(i)
                    batches = protocol_batches
                global_step = self._train_phase(i, phase, batches, phase_start,
                                                max(first_step, phase_start), global_step,
                                                results, checkpoint)
            phase_start += phase.steps
        self._select(i, global_step, results)
        self.learner.end_task(i)
        results.task_end_steps.append(global_step)
        return global_step

    def _train_phase(self, i: int, phase: Phase, batches: Iterator[Any], phase_start: int,
                     first_step: int, global_step: int, results: RunResults,
                     checkpoint: Path) -> int:
        """Steps ``first_step`` to the end of ``phase`` of task i on ``batches``; task steps are
        counted from the task's start, across phases."""
        for _ in range(first_step - phase_start):
            next(batches)
        prefix = "" if phase.name == "train" else f"{phase.name}/"
        timing = f"{phase.name}_s/task_{i}"
        before, start = results.timings.get(timing, 0.0), time.perf_counter()  # earlier sessions
        validating = 0.0  # seconds of it spent on validation, counted apart
        s = self.settings
        end, every, validate_every = phase_start + phase.steps, s.checkpoint_every, s.validate_every
        windows: dict[str, list[float]] = {}
        for step in range(first_step, end):
            values = {prefix + k: float(v)
                      for k, v in self.learner.train_step(next(batches)).items()}
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteLossError(
                    f"{bad[0]} is {values[bad[0]]} at task {i} ({self.stream[i].name!r}), step "
                    f"{step}. Results of the {results.completed_tasks} completed task(s) and the "
                    f"last checkpoint are kept in {checkpoint.parent}. Lower the "
                    "learning rate or check the inputs, then run again."
                )
            global_step += 1
            self.tracker.log_train(i, step, global_step, values)
            for name, value in values.items():
                windows.setdefault(name, []).append(value)
            # a resume starts at a multiple of checkpoint_every, so of log_every: whole windows
            if (step + 1) % s.log_every == 0 or step == end - 1:
                for name, window in windows.items():
                    results.curves.setdefault(name, []).append((global_step, float(np.mean(window))))
                windows = {}
            if validate_every and ((step + 1) % validate_every == 0 or step == end - 1):
                validating += self._validate(i, global_step, results, checkpoint)
            if (self.learner.resumes_mid_task and every and (step + 1) % every == 0
                    and step + 1 < end):
                results.timings[timing] = before + time.perf_counter() - start - validating
                self._save(checkpoint, results, global_step, task_step=step + 1)
            self._check_stop()
        results.timings[timing] = before + time.perf_counter() - start - validating  # across resumes
        return global_step

    def _training_batches(self, i: int) -> Iterator[Batch | EpisodeBatch]:
        s = self.settings
        if self.stream.episodic:
            sampler = EpisodeSampler(self.stream[i].train, s.n_way, s.k_shot, s.q_query,
                                     seed=reserved("train_batches").seed(self.seed, i),
                                     name=f"the training classes of task {i}")
            return iter(lambda: sampler.sample(s.meta_batch_size), None)
        generator = reserved("train_batches").generator(self.seed, i)
        return self.stream.train_batches(self.scenario, [i], s.batch_size, generator, seen=i + 1,
                                         setting="protocol.batch_size")

    def _record_report(self, i: int, results: RunResults) -> dict[str, np.ndarray]:
        """Store the numbers of the learner's report after task i; return its images."""
        images = {}
        report = {"model_size_bits": self.learner.model_size_bits(), **self.learner.report(i)}
        for name, value in report.items():
            if isinstance(value, torch.Tensor) and value.dim() == 4:
                images[name] = value.detach().float().clamp(0, 1).cpu().numpy()
            elif isinstance(value, torch.Tensor) and value.numel() != 1:
                raise ValueError(
                    f"{type(self.learner).__name__}.report gave {name!r} of shape "
                    f"{tuple(value.shape)}: report a number, or images as [n, C, H, W]")
            else:
                per_task = results.task_values.setdefault(name, [math.nan] * len(self.stream))
                per_task[i] = float(value)
        return images

    @torch.no_grad()
    def evaluate(self, j: int, seen: int, split: Literal["test", "validation"] = "test"
                 ) -> tuple[float, float | None]:
        """Accuracy on task j's ``split`` (and the 95% CI half-width for few-shot tasks), after
        training on ``seen`` tasks (class-IL predicts over their classes).

        Over several processes each evaluates its consecutive share of the evaluation
        (meta-)batches (whole ones: a learner may draw per position in a batch); the per-episode
        accuracies are gathered in order and the correct counts added, so R and the CI are one
        process's.
        """
        if self.stream.episodic:
            episodes, size = self._episodes(j, split), self.settings.eval_meta_batch_size
            share = distributed.shard(-(-len(episodes) // size))
            per_episode = [
                (self.learner.predict_episodes(batch).argmax(-1) == batch.query_y).float().mean(1)
                for batch in itertools.islice(episodes.batches(size), share.start, share.stop)
            ]
            shared = torch.cat(per_episode) if per_episode else \
                torch.empty(0, device=self.learner.context.device)
            return few_shot_accuracy(distributed.gather_in_order(shared).cpu().numpy())
        correct = total = 0
        task_id, size = (j if self.scenario is Scenario.TASK else None), self.settings.eval_batch_size
        share = distributed.shard(-(-len(getattr(self.stream[j], split)) // size))
        batches = self.stream.ordered_batches(self.scenario, j, size, seen, split)
        for batch in itertools.islice(batches, share.start, share.stop):
            logits = self.learner.predict(batch.x, task_id)
            predicted = logits.masked_fill(~batch.allowed, float("-inf")).argmax(1)
            correct += int((predicted == batch.y).sum())
            total += len(batch)
        correct, total = distributed.sum_in_order([torch.tensor([correct, total])])[0].tolist()
        return correct / total, None

    def _episodes(self, j: int, split: Literal["test", "validation"]) -> EvaluationEpisodes:
        """Task j's fixed test or validation episodes, each split from its own seed."""
        if (j, split) not in self._evaluation_episodes:
            s = self.settings
            stream, count = (("eval_episodes", s.eval_episodes) if split == "test" else
                             ("validation_episodes", s.validation_episodes))
            self._evaluation_episodes[j, split] = EvaluationEpisodes(
                getattr(self.stream[j], split), s.n_way, s.k_shot, s.q_query,
                seed=reserved(stream).seed(s.eval_seed, j), n_episodes=count,
                name=f"the {split} classes of task {j}",
            )
        return self._evaluation_episodes[j, split]

    def _metrics(self, results: RunResults) -> dict[str, float]:
        metrics = summarize(results.accuracy, results.initial_accuracy, results.test_sizes)
        if results.interval is not None:
            metrics["acc_ci95"] = float(np.nanmean(results.interval[-1]))
        return metrics


def _first_non_finite(state: object, path: str = "") -> str | None:
    """The key path (``['model']['0.weight']``) of the first floating tensor in a nested
    state dict with a NaN or infinity, or None if every value is finite."""
    if isinstance(state, torch.Tensor):
        finite = not state.is_floating_point() or bool(torch.isfinite(state).all())
        return None if finite else path or "value"
    if isinstance(state, float):
        return None if math.isfinite(state) else path or "value"
    items = state.items() if isinstance(state, dict) else \
        enumerate(state) if isinstance(state, (list, tuple)) else ()
    for key, value in items:
        found = _first_non_finite(value, f"{path}[{key!r}]")
        if found is not None:
            return found
    return None
