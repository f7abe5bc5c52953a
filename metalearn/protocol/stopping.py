"""Stopping a run on request (Ctrl-C, or the SIGTERM that ``timeout`` and cluster schedulers
send) at a point where everything recorded so far is consistent.

The first signal only sets a flag; the protocol checks it between training steps and between
evaluations and then raises :class:`RunStopped`, so results, plots and the last checkpoint are
written as after any other early end. A second signal interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunStopped(Exception):
    """The run was asked to stop by ``signal_name``; what it completed is kept in ``run_dir``
    (set by the protocol)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name
        self.run_dir: Path | None = None

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + signal.Signals[self.signal_name].value


class StopSignals:
    """While active (a ``with`` block in the main thread), SIGINT and SIGTERM request a stop
    instead of killing the process; :meth:`check` raises :class:`RunStopped` once requested.
    Elsewhere (another thread) signals keep their handlers and :meth:`check` never raises."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self.received = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._request) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def check(self) -> None:
        if self.received is not None:
            raise RunStopped(self.received)

    def _request(self, number: int, frame: FrameType | None) -> None:
        if self.received is not None:  # asked twice: stop now
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name
