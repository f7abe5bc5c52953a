"""``metalearn run CONFIG [key=value ...]``, ``metalearn evaluate RUN_DIR [key=value ...]``,
``metalearn sweep SPEC [--address ADDR]``, ``metalearn reproduce [--budget B]`` and ``metalearn list``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import yaml
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser
from torch.distributed.run import run as launch

from metalearn import distributed
from metalearn.cli.config import ConfigError, load_config, validate_config
from metalearn.cli.runner import evaluate, run
from metalearn.data import DataError
from metalearn.learners import available_learners
from metalearn.models import MODELS
from metalearn.protocol import NonFiniteLossError, RunStopped
from metalearn.tasks import BENCHMARKS, Scenario


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metalearn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run_parser = commands.add_parser("run", help="train and evaluate one learner on one benchmark")
    run_parser.add_argument("config", type=Path, nargs="?",
                            help="a YAML config, e.g. benchmarks/split_mnist/finetune.yaml")
    run_parser.add_argument("overrides", nargs="*", metavar="key.path=value",
                            help="override any config key, e.g. learner.options.lr=0.01 seed=3")
    run_parser.add_argument("--data-root", help="folder holding the dataset archives")
    run_parser.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: the config's)")
    run_parser.add_argument("--wandb", choices=["auto", "online", "offline", "disabled"],
                            help="wandb mode (default auto: online with credentials, else offline)")
    run_parser.add_argument("--run-dir", type=Path, help="the run's folder (default: a new one "
                            "under output_dir/<benchmark>/)")
    run_parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                            help="continue a stopped run from its last checkpoint")
    run_parser.add_argument("--nproc", type=int, default=1, metavar="N",
                            help="share the run out over N processes on this machine, started as "
                            "torchrun --standalone --nproc-per-node N would (docs/distributed.md)")

    evaluate_parser = commands.add_parser(
        "evaluate", help="test a run's trained learner again, on its benchmark or another")
    evaluate_parser.add_argument("run_dir", type=Path, help="the folder of a run")
    evaluate_parser.add_argument(
        "overrides", nargs="*", metavar="key.path=value",
        help="changes to the run's config, e.g. benchmark.name=omniglot_to_mnist protocol.k_shot=5")

    sweep_parser = commands.add_parser(
        "sweep", help="run a grid or a search of runs as Ray Tune trials (docs/sweeps.md)")
    sweep_parser.add_argument("spec", type=Path, help="a sweep spec (YAML), e.g. "
                              "benchmarks/split_mnist/si_search.yaml")
    sweep_parser.add_argument("--address", help="the Ray cluster to run on (default: RAY_ADDRESS, "
                              "else Ray started inside this command on this machine)")

    reproduce_parser = commands.add_parser(
        "reproduce", help="run the whole comparison of a suite spec at a budget, then write its "
        "report (docs/report.md)")
    reproduce_parser.add_argument("--budget", default="smoke",
                                  help="a budget of the suite: smoke, cpu or paper (default smoke)")
    reproduce_parser.add_argument("--suite", type=Path,
                                  help="the suite spec (default benchmarks/suites/learners/suite.yaml)")
    reproduce_parser.add_argument("--out", type=Path,
                                  help="the report's folder (default benchmarks/results/report_BUDGET)")
    reproduce_parser.add_argument("--address", help="the Ray cluster to run on, as for sweep")
    reproduce_parser.add_argument("--readme", action="store_true",
                                  help="also write README.md's learner table from the report")
    reproduce_parser.add_argument("--report-only", action="store_true",
                                  help="start no run: report the runs finished so far")

    commands.add_parser("list", help="show learners, benchmarks, scenarios and models")
    args, extra = parser.parse_known_args(argv)
    # Overrides typed after the flags (run CONFIG --data-root DATA key=value) are overrides too.
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and args.command in ("list", "sweep", "reproduce")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if args.command == "list":
        print(_listing())
        return 0
    if args.command == "sweep":
        from metalearn.sweep.command import sweep  # Ray is imported only by a sweep

        return sweep(args.spec, args.address)
    if args.command == "reproduce":
        from metalearn.sweep.reproduce import reproduce

        return reproduce(args.suite, args.budget, args.out, args.address, args.readme,
                         report_only=args.report_only)
    args.overrides += extra
    if args.command == "run" and args.nproc != 1 and "WORLD_SIZE" not in os.environ:
        if args.nproc < 1:
            parser.error(f"--nproc must be at least 1, got {args.nproc}")
        return _launch(args.nproc, list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "evaluate":
            print(_evaluation_report(evaluate(args.run_dir, args.overrides)))
            return 0
        if args.resume is not None:
            if args.config or args.overrides:
                raise ConfigError("--resume continues a run with its saved config: give no config "
                                  "file or overrides")
            config = load_config(args.resume / "config.yaml")
            run_dir = args.resume
        elif args.config is None:
            raise ConfigError("give a config file, e.g. metalearn run benchmarks/split_mnist/finetune.yaml")
        else:
            config, run_dir = load_config(args.config, args.overrides), args.run_dir
        flags = {"data_root": args.data_root, "device": args.device}
        data = config.model_dump(mode="json")
        data.update({key: value for key, value in flags.items() if value is not None})
        if args.wandb:
            data["wandb"]["mode"] = args.wandb
        run(validate_config(data), run_dir=run_dir, resume=args.resume is not None)
    except RunStopped as stop:  # every process stops at the same step; rank 0 speaks for all
        if distributed.is_main():
            print(f"{stop}: the results so far, the plots and {_checkpoint(stop.run_dir)} are in "
                  f"{stop.run_dir}; continue with: {_resume_command(stop.run_dir)}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        print("interrupted", file=sys.stderr)
        return 130
    except distributed.ProcessLost as error:
        print(f"{_process()}error: {error}. {_checkpoint(error.run_dir).capitalize()} is in "
              f"{error.run_dir}; continue with: {_resume_command(error.run_dir)}", file=sys.stderr)
        return 1
    except (ConfigError, DataError, NonFiniteLossError, ValueError) as error:
        print(f"{_process()}error: {error}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()
    return 0


def _launch(processes: int, argv: list[str]) -> int:
    """This command again in ``processes`` processes, started by torch.distributed's launcher
    (which passes SIGINT and SIGTERM on to them); 1 if any of them failed (each says why)."""
    options = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={processes}", "-m", "metalearn"])
    options.training_script_args = argv  # as given: each process ignores --nproc
    try:
        launch(options)
    except ChildFailedError:
        return 1
    except SignalException as signal:
        return 128 + signal.sigval
    return 0


def _checkpoint(run_dir: Path) -> str:
    return "the last checkpoint" if (run_dir / "checkpoint.pt").is_file() else \
        "no checkpoint (no task was completed yet)"


def _resume_command(run_dir: Path) -> str:
    """How to continue ``run_dir``: with as many processes as it ran with."""
    processes = distributed.world_size()
    if processes > int(os.environ.get("LOCAL_WORLD_SIZE", processes)):  # on several machines
        return f"the torchrun commands that started it, with run --resume {run_dir}"
    return f"metalearn run --resume {run_dir}" + (f" --nproc {processes}" if processes > 1 else "")


def _process() -> str:
    """``[rank 1] `` before a message when several processes print theirs."""
    return f"[rank {distributed.rank()}] " if distributed.world_size() > 1 else ""


def _evaluation_report(evaluation: dict) -> str:
    lines = [f"{evaluation['run_dir']} on {evaluation['benchmark']['name']}"
             f" {' '.join(evaluation['overrides'])}".rstrip()]
    for task in evaluation["tasks"]:
        interval = f" ± {100 * task['ci95']:.2f}" if task["ci95"] is not None else ""
        lines.append(f"  {task['task']}: {100 * task['accuracy']:.2f}%{interval}")
    lines.append(f"written to {evaluation['path']}")
    return "\n".join(lines)


def _listing() -> str:
    learners = {
        name: {"tasks": sorted(cls.task_kinds),
               "scenarios": sorted(s.value for s in cls.scenarios) if "classification" in cls.task_kinds else [],
               # the defaults, without validators that look up other learners (regularised's)
               "options": cls.Options.model_construct().model_dump(mode="json")}
        for name, cls in available_learners().items()
    }
    listing = {"learners": learners, "benchmarks": sorted(BENCHMARKS),
               "scenarios": [s.value for s in Scenario], "models": sorted(MODELS)}
    return yaml.safe_dump(listing, sort_keys=False, default_flow_style=None)


if __name__ == "__main__":
    sys.exit(main())
