"""Trackers fans calls out in order and closes every tracker even when one fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalearn.tracking import Tracker, Trackers


class Recorder(Tracker):
    def __init__(self, name: str, calls: list[str], fail_close: bool = False) -> None:
        self.name, self.calls, self.fail_close = name, calls, fail_close

    def start(self, run_dir, config, environment, total_steps):
        self.calls.append(f"{self.name}.start({total_steps})")

    def log_train(self, task_index, step, global_step, values):
        self.calls.append(f"{self.name}.log_train({global_step})")

    def log_task(self, task_index, results):
        self.calls.append(f"{self.name}.log_task({task_index})")

    def finish(self, results):
        self.calls.append(f"{self.name}.finish")

    def close(self):
        self.calls.append(f"{self.name}.close")
        if self.fail_close:
            raise OSError(f"{self.name} could not close")


def test_base_tracker_does_nothing(tmp_path: Path, drive) -> None:
    drive(Tracker(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_calls_reach_every_tracker_in_order(tmp_path: Path, partial) -> None:
    calls: list[str] = []
    trackers = Trackers([Recorder("a", calls), Recorder("b", calls)])
    trackers.start(tmp_path, {}, {}, 5)
    trackers.log_train(0, 0, 1, {"loss": 1.0})
    trackers.log_task(0, partial)
    trackers.finish(partial)
    trackers.close()
    assert calls == ["a.start(5)", "b.start(5)", "a.log_train(1)", "b.log_train(1)",
                     "a.log_task(0)", "b.log_task(0)", "a.finish", "b.finish", "a.close", "b.close"]


def test_close_reaches_all_trackers_then_raises_the_first_error() -> None:
    calls: list[str] = []
    trackers = Trackers([Recorder("a", calls, fail_close=True), Recorder("b", calls, fail_close=True),
                         Recorder("c", calls)])
    with pytest.raises(OSError, match="a could not close"):
        trackers.close()
    assert calls == ["a.close", "b.close", "c.close"]
