"""Weights & Biases: one wandb run per run folder; runs of one configuration share a group.

Mode "auto" logs online when credentials are found and offline otherwise; wandb never asks for
a key. An online start that cannot reach the server within ``init_timeout`` seconds (a cluster
node without network) logs offline instead, with a warning. The wandb run id is kept in the
run folder, so ``--resume`` continues the same wandb run. An offline run ends with two lines
on stderr: where it went and the command that uploads it (``wandb sync``). Any other wandb
failure becomes one warning and switches the tracker off: wandb never fails a run. wandb is imported only when a run starts,
because importing it is slow.
"""

from __future__ import annotations

import math
import netrc
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from metalearn.results import RunResults
from metalearn.tracking.base import Tracker, seen_tasks_mean
from metalearn.tracking.plots import image_grid, save_run_figures

MODES = ("auto", "online", "offline", "disabled")
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
              "disabled": "disabled"}
RUN_ID_FILE = "wandb_run_id"  # in the run folder: the wandb run a resumed run continues


def has_credentials() -> bool:
    """Whether wandb could log in without asking: a key in the environment or a netrc entry.

    wandb has no public, side-effect-free check (``wandb.login`` changes the session and may
    prompt), so this looks where wandb does: WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, and the
    netrc file (NETRC, else ~/.netrc or ~/_netrc) for the host of WANDB_BASE_URL.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    home = Path.home()
    candidates = [Path(os.environ["NETRC"]).expanduser()] if os.environ.get("NETRC") else [
        home / ".netrc", home / "_netrc"]
    for path in candidates:
        try:
            if netrc.netrc(str(path)).authenticators(host):
                return True
        except (OSError, netrc.NetrcParseError):
            continue
    return False


def resolve_mode(mode: str) -> str:
    """"auto" becomes WANDB_MODE if set, else "online" with credentials, else "offline"."""
    if mode not in MODES:
        raise ValueError(f"unknown wandb mode {mode!r}; choose one of {list(MODES)}")
    if mode != "auto":
        return mode
    from_env = _ENV_MODES.get(os.environ.get("WANDB_MODE", "").lower())
    return from_env or ("online" if has_credentials() else "offline")


def _plain(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class WandbTracker(Tracker):
    """Logs the config, training values and validation accuracies (x axis: global_step),
    evaluation after every task (x axis: task, -1 before training), and at the end R as a
    table, the run's figures and the metrics.

    ``name`` is the run's name in wandb (default: learner-scenario-seedN from the config).
    ``group`` gathers the runs that differ only in their seed, so wandb draws their mean with
    a band (default: learner-benchmark-scenario from the config; the runner adds a fingerprint
    of the settings). Benchmark, learner and scenario are also tags, beside ``tags``.
    ``train_every`` averages training values over that many steps per logged point: one
    ``run.log`` costs about half a millisecond, which small models would feel every step.
    ``init_timeout`` bounds the wait for the server when a run starts online (wandb's own
    default is 90 s, which every run on an offline cluster node would spend for nothing).
    """

    def __init__(self, mode: str = "auto", project: str = "metalearn", tags: Sequence[str] = (),
                 train_every: int = 10, name: str | None = None, group: str | None = None,
                 init_timeout: float = 15.0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown wandb mode {mode!r}; choose one of {list(MODES)}")
        if train_every < 1:
            raise ValueError(f"train_every must be at least 1, got {train_every}")
        if init_timeout <= 0:
            raise ValueError(f"init_timeout must be positive, got {init_timeout}")
        self.mode, self.project, self.tags, self.train_every = mode, project, list(tags), train_every
        self.name, self.group, self.init_timeout = name, group, init_timeout
        self.run: Any = None  # the wandb run while logging works, else None
        self.run_dir: Path | None = None
        self._offline = False
        self._window: dict[str, list[float]] = {}
        self._global_step = 0

    def start(self, run_dir: Path, config: dict[str, Any], environment: dict[str, Any],
              total_steps: int) -> None:
        mode = resolve_mode(self.mode)
        if mode == "disabled":
            return
        self.run_dir = Path(run_dir)
        try:
            if mode == "online" and not has_credentials():
                warnings.warn("wandb mode is 'online' but no API key was found (WANDB_API_KEY or "
                              "a netrc entry); logging offline instead", stacklevel=2)
                mode = "offline"
            self._open(mode, config, environment)
            self.run.define_metric("global_step")
            for section in ("train", "validation"):
                self.run.define_metric(f"{section}/*", step_metric="global_step")
            self.run.define_metric("task")
            for section in ("eval", "learner", "images"):
                self.run.define_metric(f"{section}/*", step_metric="task")
        except Exception as error:  # wandb must never fail a run
            self._give_up("start", error)

    def _open(self, mode: str, config: dict[str, Any], environment: dict[str, Any]) -> None:
        """Start the wandb run, or continue the one whose id the run folder keeps (a resumed
        run); an online start that cannot reach the server logs offline instead."""
        import wandb

        id_file = self.run_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        learner = (config.get("learner") or {}).get("name", "unknown")
        benchmark = (config.get("benchmark") or {}).get("name", "unknown")
        scenario, seed = config.get("scenario"), config.get("seed", 0)
        kind = [learner, benchmark, *([scenario] if scenario else [])]
        default_name = "-".join([learner, *([scenario] if scenario else []), f"seed{seed}"])
        init = dict(
            project=self.project, group=self.group or "-".join(kind), job_type=learner,
            tags=list(dict.fromkeys([*self.tags, *kind])),
            config={**config, "environment": environment}, name=self.name or default_name,
            dir=str(self.run_dir), id=run_id, resume="allow" if run_id else None,
            # silent: no banner, no prompt; console off: rich owns the terminal;
            # create_new: never hand back a run some earlier caller left open
            settings=wandb.Settings(silent=True, console="off", reinit="create_new",
                                    init_timeout=self.init_timeout),
        )
        try:
            self.run = wandb.init(mode=mode, **init)
        except wandb.errors.CommError as error:  # no network, a timeout, a refused key
            if mode != "online":
                raise
            warnings.warn(f"wandb could not start an online run ({str(error).splitlines()[0]}); "
                          "logging offline instead (--wandb offline skips the attempt)",
                          stacklevel=3)
            mode = "offline"
            self.run = wandb.init(mode=mode, **init)
        self._offline = mode == "offline"
        if run_id is None:
            id_file.write_text(self.run.id + "\n")

    def log_train(self, task_index: int, step: int, global_step: int,
                  values: dict[str, float]) -> None:
        if self.run is None:
            return
        self._global_step = global_step
        for name, value in values.items():
            self._window.setdefault(name, []).append(value)
        if global_step % self.train_every == 0:
            self._flush_train()

    def log_validation(self, task_index: int, global_step: int,
                       accuracies: dict[str, float]) -> None:
        """Each task's validation accuracy and their mean over the tasks seen (the selection
        score), on the training curves' step axis."""
        if self.run is None:
            return
        values = {f"validation/{name}": _plain(value) for name, value in accuracies.items()}
        values["validation/mean_seen"] = _plain(seen_tasks_mean(task_index, accuracies))
        values = {k: v for k, v in values.items() if v is not None}
        self._call("log", lambda: self.run.log({**values, "global_step": global_step}))

    def log_task(self, task_index: int, results: RunResults) -> None:
        if self.run is None:
            return
        self._flush_train()
        row = results.initial_accuracy if task_index < 0 else results.accuracy[task_index]
        values: dict[str, Any] = {f"eval/acc_task_{j}": _plain(v) for j, v in enumerate(row)}
        if task_index >= 0:
            values["eval/avg_acc_seen"] = _plain(np.nanmean(row[: task_index + 1]))
            if results.interval is not None:
                values.update({f"eval/ci95_task_{j}": _plain(v)
                               for j, v in enumerate(results.interval[task_index])})
            values.update({f"learner/{name}": _plain(per_task[task_index])
                           for name, per_task in results.task_values.items()})
        values = {k: v for k, v in values.items() if v is not None}
        self._call("log", lambda: self.run.log({**values, "task": task_index}))

    def log_images(self, task_index: int, images: dict[str, np.ndarray]) -> None:
        if self.run is None:
            return

        def log() -> None:
            import wandb

            self.run.log({**{f"images/{name}": wandb.Image(image_grid(batch), caption=name)
                             for name, batch in images.items()}, "task": task_index})

        self._call("log images", log)

    def finish(self, results: RunResults) -> None:
        if self.run is None:
            return
        self._flush_train()
        self._call("finish", lambda: self._finish(results))

    def close(self) -> None:
        """Reached with a live run only if ``finish`` never ran: the run failed."""
        if self.run is not None:
            self._call("close", lambda: self._end(exit_code=1))

    def _finish(self, results: RunResults) -> None:
        import wandb

        table = wandb.Table(columns=["after_task", *results.task_names])
        table.add_data("before training", *map(_plain, results.initial_accuracy))
        for i in range(results.completed_tasks):
            table.add_data(results.task_names[i], *map(_plain, results.accuracy[i]))
        figures = {f"figures/{path.stem}": wandb.Image(str(path))  # drawn by the run folder
                   for path in save_run_figures(results, self.run_dir, overwrite=False)}
        self.run.log({"accuracy_matrix": table, **figures})
        self.run.summary.update({**results.metrics, "completed_tasks": results.completed_tasks})
        self._end(exit_code=0 if results.completed_tasks == len(results.task_names) else 1)

    def _end(self, exit_code: int) -> None:
        """Finish the wandb run; an offline one says on stderr where it went and the command
        that uploads it with the parts earlier sessions of a resumed run left."""
        run_id, folder = self.run.id, self.run.settings.sync_dir
        self.run.finish(exit_code=exit_code)
        self.run = None
        if self._offline:
            parts = f"{shlex.quote(str(self.run_dir / 'wandb'))}/offline-run-*-{run_id}"
            print(f"wandb: logged offline to {folder}\nwandb: upload with: wandb sync {parts}",
                  file=sys.stderr)

    def _flush_train(self) -> None:
        if self.run is None or not self._window:
            return
        values = {f"train/{k}": float(np.mean(v)) for k, v in self._window.items()}
        self._window = {}
        self._call("log", lambda: self.run.log({**values, "global_step": self._global_step}))

    def _call(self, what: str, action: Any) -> None:
        try:
            action()
        except Exception as error:  # wandb must never fail a run
            self._give_up(what, error)

    def _give_up(self, what: str, error: Exception) -> None:
        """Warn once, then stop using wandb; the run itself goes on."""
        warnings.warn(f"wandb failed in {what} ({type(error).__name__}: {error}); the run "
                      "continues without wandb", stacklevel=3)
        run, self.run = self.run, None
        if run is not None:
            try:  # let wandb close its files; a second failure adds nothing to the warning
                run.finish(exit_code=1)
            except Exception:
                pass
