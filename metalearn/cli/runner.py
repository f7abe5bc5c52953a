"""Builds a run's pieces from its config and hands them to the protocol."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch

import metalearn
from metalearn import distributed
from metalearn.cli.config import ConfigError, RunConfig, check_options, load_config
from metalearn.learners import LearnerContext, check_compatible, get_learner
from metalearn.learners.base import check_distributed
from metalearn.models import MODELS, build_model
from metalearn.protocol import Protocol
from metalearn.protocol.checkpoint import load_checkpoint
from metalearn.protocol.stopping import StopSignals
from metalearn.results import RunResults
from metalearn.seeding import reserved
from metalearn.tasks import BENCHMARKS, Scenario, Stream
from metalearn.tracking import ConsoleReporter, RunFolder, Trackers, WandbTracker, claim_run_dir
from metalearn.tracking.run_folder import CONFIG_FILE


def resolve_device(name: str) -> torch.device:
    """The device of ``name``; ``cuda`` (or ``auto`` with a GPU) is this process's own GPU when
    torchrun started one process per GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available; use device=cpu")
    return distributed.process_device(torch.device(name))


def build_stream(config: RunConfig, device: torch.device) -> tuple[Stream, Scenario | None]:
    """The benchmark's stream and the validated scenario (None for few-shot streams)."""
    name = config.benchmark.name
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; known benchmarks: {sorted(BENCHMARKS)}")
    builder = BENCHMARKS[name]
    options = check_options("benchmark.options", config.benchmark.options, builder,
                            skip=("data_root", "device"))
    stream = builder(**options, data_root=config.data_root, device=device)
    if config.task_order is not None:
        stream = stream.reordered(task_order(config, len(stream)))
    if stream.episodic:
        if config.scenario is not None:
            raise ConfigError(f"benchmark {name!r} is few-shot: remove the scenario setting")
        return stream, None
    if config.scenario is None:
        supported = sorted(s.value for s in stream.scenarios)
        raise ConfigError(f"benchmark {name!r} needs a scenario: set scenario to one of {supported}")
    return stream, stream.check_scenario(config.scenario)


def task_order(config: RunConfig, n_tasks: int) -> list[int]:
    """The run's order of the benchmark's tasks: as given, or a permutation drawn from the seed."""
    if config.task_order == "random":
        generator = reserved("task_order").generator(config.seed)
        return torch.randperm(n_tasks, generator=generator).tolist()
    if sorted(config.task_order) != list(range(n_tasks)):
        raise ConfigError(f"task_order {config.task_order} is not a permutation of the "
                          f"{config.benchmark.name} tasks 0..{n_tasks - 1}; give each index once")
    return list(config.task_order)


def build_run(config: RunConfig) -> tuple[Stream, Scenario | None, Any, torch.device]:
    """Stream, scenario and learner, every compatibility check done before any training."""
    device = resolve_device(config.device)
    learner_class = get_learner(config.learner.name)
    stream, scenario = build_stream(config, device)
    check_compatible(learner_class, stream, scenario)
    options = check_options("learner.options", config.learner.options, learner_class.Options)
    processes = distributed.world_size()
    check_distributed(learner_class, options, processes)
    if stream.episodic and config.protocol.meta_batch_size < processes:
        raise ConfigError(f"protocol.meta_batch_size ({config.protocol.meta_batch_size}) is below "
                          f"the number of processes ({processes}): each process needs an episode; "
                          "raise it or start fewer processes")
    if config.model.name not in MODELS:
        raise ConfigError(f"unknown model {config.model.name!r}; choose one of {sorted(MODELS)}")
    model_options = check_options("model.options", config.model.options, MODELS[config.model.name],
                                  skip=("in_features", "in_channels", "n_outputs"))
    first = stream[0]
    if stream.episodic:
        input_shape, n_outputs = (1, *first.train.image_shape), config.protocol.n_way
    else:
        input_shape, n_outputs = (1, *first.train.images.shape[1:]), stream.n_outputs(scenario)
    torch.manual_seed(reserved("model_init").seed(config.seed))
    model = build_model(config.model.name, input_shape, n_outputs, **model_options)
    learner = learner_class(model, options, LearnerContext(stream, scenario, device, config.seed))
    return stream, scenario, learner, device


def run_name(config: RunConfig) -> str:
    """Learner, scenario, seed and the settings' fingerprint: ``dgr-class-seed0-3fa2c1``, so
    runs of different settings (other options, another config file) never share a name."""
    scenario = f"-{config.scenario.value}" if config.scenario else ""
    return f"{config.learner.name}{scenario}-seed{config.seed}-{config.fingerprint()}"


def run_group(config: RunConfig) -> str:
    """The name shared by runs that differ only in their seed (wandb's group, which draws their
    mean with a band): ``dgr-split_mnist-class-8b41e0``, the fingerprint taken with seed 0."""
    scenario = f"-{config.scenario.value}" if config.scenario else ""
    unseeded = config.model_copy(update={"seed": 0}).fingerprint()
    return f"{config.learner.name}-{config.benchmark.name}{scenario}-{unseeded}"


def default_run_dir(config: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(config.output_dir) / config.benchmark.name / f"{run_name(config)}-{stamp}"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that started this process as anyone can rerun it: ``metalearn`` and its
    arguments, with paths inside the working folder written relative to it."""
    here = Path.cwd()

    def portable(argument: str) -> str:
        path = Path(argument)
        if path.is_absolute() and path.is_relative_to(here):
            argument = str(path.relative_to(here))
        return shlex.quote(argument)

    return " ".join(["metalearn", *map(portable, (sys.argv if argv is None else argv)[1:])])


def environment(device: torch.device, config: RunConfig) -> dict[str, Any]:
    """What a reader needs to reproduce the run: versions, hardware, seed, command, commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(metalearn.__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "metalearn": metalearn.__version__, "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "host": socket.gethostname(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "processes": distributed.world_size(),
        "seed": config.seed, "command": command_line(), "git_commit": commit or None,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def claim_folder(config: RunConfig, run_dir: Path | None) -> Path:
    """A new folder that this run alone writes to: ``run_dir``, or a new one under
    ``output_dir/<benchmark>/`` (numbered if another run started in the same second)."""
    wanted = run_dir or default_run_dir(config)
    try:
        return claim_run_dir(wanted, numbered=run_dir is None)
    except FileExistsError:
        raise ConfigError(f"{wanted} already holds a run: pass --resume {wanted} to continue it, "
                          "or choose another --run-dir") from None
    except OSError as error:
        raise ConfigError(f"cannot create the run folder {wanted} ({error.strerror or error}): "
                          "set output_dir=PATH or --run-dir PATH to a writable folder") from None


def resume_state(config: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint to continue ``run_dir`` from (None if it stopped before its first), after
    checking that it is readable and was made with ``config``'s result settings: results of a
    run whose steps or options changed halfway would match neither config. Writes nothing."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir} holds no run (no {CONFIG_FILE}): give the folder of a "
                          "stopped run to --resume")
    checkpoint = run_dir / "checkpoint.pt"
    state = load_checkpoint(checkpoint) if checkpoint.is_file() else None
    started = (state or {}).get("run_settings") or load_config(run_dir / CONFIG_FILE).result_settings()
    changed = config.changes_since(started)
    if changed:
        raise ConfigError(f"{run_dir} was started with other settings: {'; '.join(changed)}. "
                          f"Continue it with the settings it started with (undo the edit of its "
                          f"{CONFIG_FILE}, or drop the overrides), or start a new run")
    saved, processes = (state or {}).get("processes", 1), distributed.world_size()
    if state is not None and saved != processes:
        raise ConfigError(
            f"{run_dir} was trained by {saved} process(es) and is resumed by {processes}: the "
            "sums across processes would be added in another order, so the rest of the run would "
            f"not be the run it started as. Resume it with {saved} process(es)"
            + (" (metalearn run --resume, without torchrun)" if saved == 1 else
               f" (metalearn run --resume {run_dir} --nproc {saved}, or torchrun)"))
    return state


def run(config: RunConfig, run_dir: Path | None = None, resume: bool = False,
        console: Any = None) -> RunResults:
    """Train and evaluate one learner on one benchmark; results go to ``run_dir`` (default: a
    new folder). ``resume`` continues the stopped run in ``run_dir`` if its checkpoint was made
    with the same settings and number of processes; a resume that fails leaves the folder as it
    was. Started by torchrun, this process joins the others (metalearn.distributed): rank 0
    claims the folder, reads the checkpoint and alone writes to the trackers."""
    if resume and run_dir is None:
        raise ConfigError("resuming needs the folder of the run to continue")
    distributed.init_from_environment(resolve_device(config.device))
    state = distributed.on_main(lambda: resume_state(config, run_dir)) if resume else None
    stream, scenario, learner, device = build_run(config)
    results = RunResults.empty(
        config.benchmark.name, config.learner.name, scenario.value if scenario else None,
        config.seed, [t.name for t in stream],
        [config.protocol.eval_episodes if stream.episodic else len(t.test) for t in stream],
        episodic=stream.episodic,
    )
    tracker = Trackers([
        RunFolder(),
        ConsoleReporter(console=console),
        WandbTracker(mode=config.wandb.mode, project=config.wandb.project, tags=config.wandb.tags,
                     name=run_name(config), group=run_group(config)),
    ] if distributed.is_main() else [])
    protocol = Protocol(stream, scenario, learner, config.protocol, config.seed, tracker,
                        run_settings=config.result_settings())
    if state is not None:
        try:
            protocol.restore(state, results)
        except (RuntimeError, KeyError) as error:
            raise ConfigError(f"the checkpoint in {run_dir} does not fit this learner and model "
                              f"({str(error).splitlines()[0]}); nothing was changed") from None
    run_dir = run_dir if resume else distributed.on_main(lambda: claim_folder(config, run_dir))
    try:
        tracker.start(run_dir, config.model_dump(mode="json"), environment(device, config),
                      total_steps=protocol.total_steps())
        protocol.run(results, run_dir)
    finally:  # a stop signal now (torchrun's to the survivors of a dead process) waits for these
        with StopSignals():
            tracker.finish(results)
            tracker.close()
    return results


def evaluate(run_dir: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Test the learner of a finished run, as its checkpoint holds it, on every task of its
    benchmark, or of another one given by ``overrides`` (Omniglot-trained on MNIST digits, more
    shots, more inner steps at test), with the protocol's own evaluation. Returns the accuracies
    (95% CIs for few-shot tasks) and writes them to ``run_dir/evaluations/<overrides>.json``
    (``as_trained.json`` without overrides)."""
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.is_file():
        raise ConfigError(f"{run_dir} holds no checkpoint.pt: give the folder of a finished run")
    config = load_config(run_dir / "config.yaml", overrides)
    started = environment(resolve_device(config.device), config)
    stream, scenario, learner, device = build_run(config)
    state = load_checkpoint(checkpoint, map_location=device)
    trained = RunResults.from_dict(state["results"])
    if trained.completed_tasks < len(trained.task_names):
        raise ConfigError(
            f"{run_dir} stopped after {trained.completed_tasks} of {len(trained.task_names)} tasks "
            f"(its learner may be mid-task): finish it with metalearn run --resume {run_dir}")
    try:
        learner.load_state_dict(state["learner"])
    except RuntimeError as error:
        raise ConfigError(f"the learner saved in {run_dir} does not fit the evaluation's model: "
                          "keep the model and its number of outputs (protocol.n_way for few-shot "
                          f"benchmarks) as in training ({str(error).splitlines()[0]})") from None
    protocol = Protocol(stream, scenario, learner, config.protocol, config.seed, Trackers([]))
    tasks = []
    for j, task in enumerate(stream):
        accuracy, interval = protocol.evaluate(j, seen=len(stream))
        tasks.append({"task": task.name, "accuracy": accuracy, "ci95": interval})
    p = config.protocol
    evaluation = {"run_dir": str(run_dir), "overrides": list(overrides),
                  "benchmark": config.benchmark.model_dump(mode="json"),
                  "scenario": scenario.value if scenario else None, "tasks": tasks,
                  "shots": {"n_way": p.n_way, "k_shot": p.k_shot, "episodes": p.eval_episodes}
                  if stream.episodic else None, "environment": started}
    name = re.sub(r"[^A-Za-z0-9._=-]+", "-", "_".join(overrides))[:120] or "as_trained"
    out = run_dir / "evaluations" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(evaluation, indent=2) + "\n")
    evaluation["path"] = str(out)
    return evaluation
