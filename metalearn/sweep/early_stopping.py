"""Tune's side of early stopping (docs/sweeps.md), imported only when a sweep starts (it imports
Ray): ASHA over the validation points runs write as they train, recording whom it stopped, and
Optuna's TPE told the final metric of finished runs only."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from metalearn.sweep.engine import FINAL, STEP
from metalearn.sweep.spec import VALIDATION_METRIC, Scheduler

NO_LIMIT = 10**9  # ASHA's max_t: trials end with their runs, at whatever step that is


class RecordingASHA(ASHAScheduler):
    """ASHA on each trial's validation points (``STEP``, ``val_acc``); ``stopped`` maps the id of
    each trial it stopped to the step and score it was stopped at, so that the summary tells them
    from trials that were cut short because the sweep itself was stopped."""

    def __init__(self, options: Scheduler, mode: str) -> None:
        super().__init__(time_attr=STEP, metric=VALIDATION_METRIC, mode=mode, max_t=NO_LIMIT,
                         grace_period=options.grace_period, reduction_factor=options.reduction_factor)
        self.stopped: dict[str, tuple[int, float]] = {}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self.stopped[trial.trial_id] = (result[STEP], result[VALIDATION_METRIC])
        return action


class FinishedRunsSearch(OptunaSearch):
    """Optuna's TPE, told the metric of finished runs only: a run stopped early is told as pruned,
    since its score at the step it stopped is not the run's (on a continual stream it is the
    accuracy on the first tasks alone, which a finished run never matches)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result if result and FINAL in result else None, error)
