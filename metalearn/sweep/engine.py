"""Runs a sweep's trials on Ray Tune: each trial is one ordinary ``metalearn run`` in its own
process and run folder, so a crash (NaN loss, a killed process) ends that trial only.

A run folder is named by its config's fingerprint (``output_dir/<benchmark>/<run_name>``), so
a sweep started again finds its runs: a finished one is reused, a stopped one continues with
``metalearn run --resume``. The engine never reaches into the protocol: it starts runs and
reads their ``results.json`` (and, under a scheduler, the ``validation.jsonl`` they write as
they train).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from metalearn.cli.runner import run_name
from metalearn.sweep.spec import VALIDATION_METRIC, Resources, Scheduler, SweepSpec, Trial, trials
from metalearn.tracking.run_folder import CONFIG_FILE, load_results, load_validation_points

INSTALL = 'pip install "metalearn[sweep]"'
ADDRESS_TIMEOUT_S = 5.0
METALEARN = (sys.executable, "-m", "metalearn")
TRIAL_NICENESS = 10  # each run's process runs at this niceness
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
STEP = "step"  # a validation point's global training step (ASHA's time axis)
FINAL = "status"  # a key of a trial's final result only (ran, resumed, reused), never of a point
POLL_S = 0.5  # how often a trial under a scheduler looks for its run's new validation points
STOP_TIMEOUT_S = 120.0  # a stopped run's time to reach its next step and exit, before SIGKILL
_CLUSTER_FIX = ("start it with ray start --head on that machine, or drop --address (and RAY_ADDRESS) "
                "to run on this machine")


class SweepError(RuntimeError):
    """The sweep cannot start (Ray missing, a cluster that does not answer)."""


class TrialFailed(RuntimeError):
    """A trial's run failed; the message is the run's own error line."""


def import_tune() -> Any:
    try:
        from ray import tune
    except ImportError:
        raise SweepError(f"metalearn sweep runs on Ray Tune, which is not installed: {INSTALL}") from None
    return tune


def start_ray(address: str | None) -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), failing within seconds when it does
    not answer (``ray.init`` itself retries for a minute), or start Ray inside this process
    with the machine's CPUs and GPUs."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("auto", "local"):
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            _check_grpc_server(host, int(port))
        except (OSError, ValueError) as error:
            raise SweepError(f"the Ray cluster at {address} does not answer ({error}): {_CLUSTER_FIX}") from None
        # A server answers: Ray's connection then tries once a second, 20 times by default.
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(int(ADDRESS_TIMEOUT_S)))
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError) as error:
        raise SweepError(f"no Ray cluster answers at {address} ({str(error).splitlines()[0]}; Ray's "
                         "lines above say why, e.g. a missing authentication token: docs/sweeps.md): "
                         f"{_CLUSTER_FIX}") from None


def _check_grpc_server(host: str, port: int) -> None:
    """Raise OSError unless an HTTP/2 server (Ray's GCS speaks gRPC) answers at host:port within
    ADDRESS_TIMEOUT_S: one that accepts the connection and then stays silent would hold
    ``ray.init`` for minutes."""
    with socket.create_connection((host, port), timeout=ADDRESS_TIMEOUT_S) as connection:
        connection.settimeout(ADDRESS_TIMEOUT_S)
        # The client preface and an empty SETTINGS frame; a server's first frame is SETTINGS (RFC 9113).
        connection.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        try:
            header = connection.recv(9)
        except socket.timeout:
            raise OSError(f"no reply within {ADDRESS_TIMEOUT_S:.0f} s") from None
    if len(header) < 4 or header[3] != 4:
        raise OSError("what answers there is not a gRPC server")


def run_trial(trial: Trial, command: Sequence[str] = METALEARN, cwd: Path | None = None,
              report: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run (or reuse, or resume) ``trial``'s run, started in ``cwd`` (a relative output_dir is
    relative to it, and the run's recorded command keeps it so); its metrics and how it was
    obtained. ``report`` (Tune's, under a scheduler) is given each validation point the run
    writes while it trains; it stops the trial by raising, and the run then stops as on Ctrl-C
    (SIGTERM), keeping its last checkpoint: the same sweep started again resumes it."""
    run_dir = trial_run_dir(trial)
    folder = (cwd or Path.cwd()) / run_dir  # Tune calls this in a folder of its own
    status = "reused"
    if not _finished(folder):
        status = "resumed" if (folder / CONFIG_FILE).is_file() else "ran"
        arguments = (["run", "--resume", str(run_dir)] if status == "resumed" else
                     ["run", str(trial.config), *trial.overrides, "--run-dir", str(run_dir)])
        _run_process([*command, *arguments], cwd, folder, report)
    return {FINAL: status, "run_dir": str(run_dir), **load_results(folder).metrics}


def _run_process(arguments: list[str], cwd: Path | None, folder: Path,
                 report: Callable[[dict], None] | None) -> None:
    """Run ``arguments`` (a ``metalearn run``) to its end, passing on to ``report`` (if given)
    the validation points it writes into ``folder`` meanwhile; TrialFailed with its error line
    if it fails."""
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(arguments, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                                   env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
                                   preexec_fn=_trial_process)
        try:
            if report is None:
                process.wait()
            else:
                _follow(process, folder, report)
        except BaseException:  # Tune stopped the trial (SystemExit in its report), or the sweep stops
            _stop(process)
            raise
        if process.returncode != 0:
            stderr.seek(0)
            raise TrialFailed(_error_line(stderr.read()) or f"exit status {process.returncode}")


def _follow(process: subprocess.Popen, folder: Path, report: Callable[[dict], None]) -> None:
    """Report each validation point of the run in ``folder`` until ``process`` ends: its step
    and its score as ``val_acc``. A resumed run scores the steps after its checkpoint again:
    only the steps beyond the last one reported are new."""
    last = -1
    while True:
        ended = process.poll() is not None
        for point in load_validation_points(folder):
            if point["step"] > last:
                report({STEP: point["step"], VALIDATION_METRIC: point["score"]})
                last = point["step"]
        if ended:
            return
        time.sleep(POLL_S)


def _stop(process: subprocess.Popen) -> None:
    """Stop a run as Ctrl-C does (SIGTERM: it stops at its next step or evaluation and keeps its
    last checkpoint); SIGKILL if it has not ended within STOP_TIMEOUT_S (checkpoints are written
    atomically: the last one stays whole)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_sweep(spec: SweepSpec, command: Sequence[str] = METALEARN, address: str | None = None) -> list[dict]:
    """Every trial of ``spec`` as a Tune trial, side by side as resources allow; one row per
    trial (its settings, status, metric, run folder or error), failures included."""
    if spec.searches():
        # A searcher's point becomes a trial in Tune's folder for it: the spec's paths, relative
        # to this folder, are made absolute here.
        spec = spec.model_copy(update={"configs": [path.absolute() for path in spec.configs],
                                       "output_dir": spec.output_dir.absolute()})
    if spec.architecture is not None:
        from metalearn.sweep.architecture import run_architecture_search

        return run_architecture_search(spec, command, address)
    if spec.search is None:
        return run_trials(trials(spec), spec.resources, spec.output_dir, command, address,
                          spec.metric, spec.scheduler, spec.mode)
    tune = import_tune()
    from metalearn.sweep.early_stopping import FinishedRunsSearch

    space = {key: value.tune_domain() for key, value in spec.search.space.items()}
    # Seeded draws: a search started again (after a kill) draws the same random first points
    # (TPE's first 10) and reuses their runs; later points follow the results in the order
    # they came, which trials side by side may change.
    searcher = FinishedRunsSearch(metric=spec.metric, mode=spec.mode, seed=spec.seeds[0])
    tune_config = tune.TuneConfig(search_alg=searcher, num_samples=spec.search.samples, reuse_actors=True)
    return fit(space, tune_config, lambda params: trials(spec, params)[0], spec.resources,
                spec.output_dir, command, address, spec.metric, spec.scheduler, spec.mode)


def run_trials(grid: list[Trial], resources: Resources, output_dir: Path, command: Sequence[str] = METALEARN,
               address: str | None = None, metric: str = "val_acc", scheduler: Scheduler | None = None,
               mode: str = "max") -> list[dict]:
    """``grid``'s trials (a sweep's, or a suite's: ``metalearn reproduce``), side by side as
    ``resources`` allow; one row per trial, failures included."""
    tune = import_tune()
    space = {"trial": tune.grid_search([trial.model_dump(mode="json") for trial in grid])}
    return fit(space, tune.TuneConfig(reuse_actors=True),
                lambda params: type(grid[0]).model_validate(params["trial"]),
                resources, output_dir, command, address, metric, scheduler, mode)


def fit(space: dict, tune_config: Any, trial_of: Callable[[dict], Trial], resources: Resources,
         output_dir: Path, command: Sequence[str], address: str | None, metric: str,
         scheduler: Scheduler | None, mode: str) -> list[dict]:
    """Run Tune over ``space``, each point's trial given by ``trial_of`` (a grid point carries
    its trial whole; a searcher's point is made into one), and tabulate the results. Under a
    ``scheduler`` each trial reports its run's validation points as they come."""
    tune = import_tune()
    start_ray(address)
    cwd = Path.cwd()  # Tune runs each trial function in a folder of its own
    asha = None
    if scheduler is not None:
        from metalearn.sweep.early_stopping import RecordingASHA

        asha = tune_config.scheduler = RecordingASHA(scheduler, mode)
    report = tune.report if scheduler is not None else None

    def trainable(params: dict[str, Any]) -> None:
        tune.report(run_trial(trial_of(params), command, cwd, report))

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": resources.cpus, "gpu": resources.gpus}),
        param_space=space, tune_config=tune_config,
        run_config=tune.RunConfig(name="tune", storage_path=str((output_dir / "ray").absolute()),
                                  verbose=0, failure_config=tune.FailureConfig(fail_fast=False)))
    # A trial that never started (the sweep was stopped with Ctrl-C) has no config and no row:
    # the same command started again runs it.
    results = [result for result in tuner.fit() if result.config]
    stopped = asha.stopped if asha is not None else {}
    return [_row(trial_of(result.config), result, metric, stopped) for result in results]


def trial_run_dir(trial: Trial) -> Path:
    """The folder of ``trial``'s run: named by its settings, so a sweep run again finds it."""
    config = trial.run_config()
    return Path(config.output_dir) / config.benchmark.name / run_name(config)


def _row(trial: Trial, result: Any, metric: str, stopped: dict[str, tuple[int, float]]) -> dict[str, Any]:
    """The summary's row of ``trial``: a run stopped early (``stopped``: trial id -> the step
    and score it was stopped at) has no metric (its score at that step is not the run's); a
    trial cut short by the sweep's own stop has no status."""
    error = None
    if result.error is not None:  # Tune wraps the trial's exception; its last line is the message
        error = str(result.error).strip().splitlines()[-1].removeprefix(f"{TrialFailed.__module__}.")
    metrics = result.metrics or {}
    status = "failed" if error else metrics.get(FINAL)
    if status is None and metrics.get("trial_id") in stopped:
        step, score = stopped[metrics["trial_id"]]
        status = f"stopped early at step {step} ({VALIDATION_METRIC} {score:.4f})"
    config = trial.run_config()
    return {"label": trial.label, "settings": trial.settings, "seed": config.seed,
            "scenario": config.scenario.value if config.scenario else None, "status": status,
            metric: metrics.get(metric) if FINAL in metrics else None,
            "run_dir": str(trial_run_dir(trial)), "error": error}


def _trial_process() -> None:
    """In a trial's run process, before it starts: yield the CPU to interactive work (trials
    are batch jobs), and on Linux stop (SIGTERM: the run saves its checkpoint) when the worker
    that started it dies, so a killed sweep leaves no run training on that a new one resumes."""
    try:  # Ray runs its workers at niceness 19 (idle priority): a run there would starve
        os.setpriority(os.PRIO_PROCESS, 0, TRIAL_NICENESS)
    except PermissionError:  # raising a process's priority takes privileges: left as it is
        pass
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _finished(run_dir: Path) -> bool:
    try:
        results = load_results(run_dir)
    except FileNotFoundError:
        return False
    return results.completed_tasks == len(results.task_names) and bool(results.metrics)


def _error_line(stderr: str) -> str:
    """The run's own one-line error (``error: ...``), else the last line it printed."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line.split(":")[0]]
    return (errors or lines or [""])[-1]
