"""Wall time of a suite's runs as sweep trials side by side on this machine, against the same
runs one after another, and Ray's overhead per trial (issue 20's measurement).

The trials are the first ``--trials`` of a suite at one budget (default: the learner suite's
smoke budget, the runs of ``metalearn reproduce --budget smoke``). Three ways of running them
take turns in each of ``--repeats`` rounds (the order rotated every round, so a machine that
speeds up or slows down affects all alike), each in fresh run folders:

- parallel: ``metalearn sweep``'s engine on Ray, one CPU per trial, as many side by side as
  the machine has CPUs (2 on a 2-core machine);
- sequential: the same ``metalearn run`` processes one after another, without Ray (each
  single-threaded, at the niceness trials run at);
- ray_sequential: the engine on a Ray started with one CPU, so one trial at a time: against
  sequential, what Ray adds per trial (scheduling, its worker, reporting).

Reported: the median wall time of each with its spread (min, max); the speed-up, sequential
over parallel (the issue's goal: at least 1.7x for single-threaded runs on 2 cores), per round
and as the median; Ray's overhead per trial, (ray_sequential - sequential) / trials, and the
seconds ``ray.init`` took to start Ray (outside the timed runs). Runs single-threaded only mean
something on an otherwise idle machine: a loaded one shares its cores with other work.

    python benchmarks/sweep_speed.py --data-root DATA          # writes benchmarks/results/sweep_speed.json
    python benchmarks/sweep_speed.py --trials 2 --repeats 1 --out /tmp/speed.json   # smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import ray

from metalearn.sweep.engine import run_trial, run_trials
from metalearn.sweep.spec import Resources, Trial
from metalearn.sweep.suite import load_suite, suite_trials

SUITE = Path("benchmarks/suites/learners/suite.yaml")
MODES = ("parallel", "sequential", "ray_sequential")


def in_folder(trials: list[Trial], folder: Path) -> list[Trial]:
    """The same trials writing their runs under ``folder`` (a later override wins)."""
    return [trial.model_copy(update={"overrides": [*trial.overrides, f"output_dir={folder}"]})
            for trial in trials]


def timed_ray(trials: list[Trial], folder: Path, cpus: int) -> tuple[float, float]:
    """(seconds to start Ray with ``cpus`` CPUs, seconds to run ``trials`` on it)."""
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    try:
        rows = run_trials(trials, Resources(cpus=1), folder)
    finally:
        ray.shutdown()
    _check(rows)
    return started - start, time.perf_counter() - started


def timed_sequential(trials: list[Trial]) -> float:
    start = time.perf_counter()
    _check([run_trial(trial) for trial in trials])
    return time.perf_counter() - start


def _check(rows: list[dict]) -> None:
    failed = [row for row in rows if row["status"] != "ran"]
    if failed:
        raise SystemExit(f"error: a timed run did not run to its end: {failed[0]}")


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(trials: list[Trial], repeats: int, work: Path, cpus: int) -> dict:
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    ray_start: list[float] = []

    def parallel(folder: Path) -> float:
        startup, wall = timed_ray(in_folder(trials, folder), folder, cpus)
        ray_start.append(startup)
        return wall

    def ray_sequential(folder: Path) -> float:
        startup, wall = timed_ray(in_folder(trials, folder), folder, 1)
        ray_start.append(startup)
        return wall

    runners: dict[str, Callable[[Path], float]] = {
        "parallel": parallel, "ray_sequential": ray_sequential,
        "sequential": lambda folder: timed_sequential(in_folder(trials, folder))}
    for round_ in range(repeats):
        for mode in MODES[round_ % len(MODES):] + MODES[:round_ % len(MODES)]:
            folder = (work / f"{mode}-{round_}").absolute()
            shutil.rmtree(folder, ignore_errors=True)
            seconds[mode].append(runners[mode](folder))
            print(f"round {round_}: {mode} {seconds[mode][-1]:.1f} s", flush=True)
    ratios = [s / p for s, p in zip(seconds["sequential"], seconds["parallel"])]
    overheads = [(r - s) / len(trials) for r, s in zip(seconds["ray_sequential"], seconds["sequential"])]
    return {"seconds": {mode: {**spread(values), "all": values} for mode, values in seconds.items()},
            "speedup": {**spread(ratios), "all": ratios},
            "ray_overhead_per_trial_s": {**spread(overheads), "all": overheads},
            "ray_start_s": spread(ray_start)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=SUITE)
    parser.add_argument("--budget", default="smoke")
    parser.add_argument("--trials", type=int, default=6, help="the first N trials of the suite")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", help="METALEARN_DATA for the runs (default: as set)")
    parser.add_argument("--work", type=Path, default=Path("runs/sweep_speed"), help="run folders")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sweep_speed.json"))
    args = parser.parse_args(argv)
    if args.trials < 1 or args.repeats < 1:
        parser.error("--trials and --repeats must be at least 1")
    if args.data_root:
        os.environ["METALEARN_DATA"] = args.data_root
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # single-threaded runs, as the issue asks
    trials = suite_trials(load_suite(args.suite), args.budget, args.suite)[: args.trials]
    cpus = os.cpu_count() or 1
    print(f"{len(trials)} trials of {args.suite} at the {args.budget} budget, {args.repeats} "
          f"round(s), {cpus} CPUs", flush=True)
    result = measure(trials, args.repeats, args.work, cpus)
    result.update({"command": " ".join([Path(sys.executable).name, *sys.argv]),
                   "suite": str(args.suite), "budget": args.budget, "cpus": cpus,
                   "machine": platform.processor() or platform.machine(),
                   "trials": [" ".join([trial.config.name, *trial.overrides]) for trial in trials]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    seconds = result["seconds"]
    print(" ".join(f"{mode} {seconds[mode]['median']:.1f} s ({seconds[mode]['min']:.1f}-"
                   f"{seconds[mode]['max']:.1f})" for mode in MODES))
    print(f"speed-up (sequential / parallel) {result['speedup']['median']:.2f}x "
          f"({result['speedup']['min']:.2f}-{result['speedup']['max']:.2f}); Ray's overhead per "
          f"trial {result['ray_overhead_per_trial_s']['median']:.2f} s; ray.init "
          f"{result['ray_start_s']['median']:.1f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
