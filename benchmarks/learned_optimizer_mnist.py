"""Andrychowicz et al. (2016)'s MNIST experiment: the LSTM optimizer against SGD, RMSprop, Adam
and Nesterov momentum, each with its learning rate tuned on a grid.

1. Meta-train the LSTM optimizer: an ordinary ``metalearn run`` of the config (stored under
   ``--runs``, resumed if it was cut off, reused once it is complete).
2. For each problem (the one it was trained on: 20 sigmoid hidden units; 40 units; ReLU) and
   each length (100 and 200 steps), tune every baseline's learning rate: the one with the lowest
   mean loss over the last 10 steps, over ``--tuning-inits`` initialisations of their own.
3. Train from ``--inits`` fresh initialisations with every optimizer, all seeing the same
   initialisation and minibatches; plot the mean minibatch loss against step (the loss at
   step t is taken before the t-th update, so "final" is after ``steps - 1`` updates).

    python benchmarks/learned_optimizer_mnist.py benchmarks/mnist/lstm_optimizer.yaml \\
        --out benchmarks/results/learned_optimizer_mnist

Writes ``summary.json`` (every curve), ``summary.md`` and ``curves_<problem>_<steps>.png`` to
``--out``, and logs the figures and final losses to wandb (``--wandb``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from metalearn.cli.config import RunConfig, load_config
from metalearn.cli.runner import build_run, environment, resolve_device, run
from metalearn.learners import masked_cross_entropy
from metalearn.models import build_model, reinitialise
from metalearn.protocol.checkpoint import load_checkpoint
from metalearn.seeding import reserved
from metalearn.tracking import plot_loss_curves, resolve_mode
from metalearn.tracking.run_folder import load_results

PROBLEMS = {  # each optimisee problem: these over the config's model options
    "sigmoid20": {"hidden": [20], "activation": "sigmoid"},
    "sigmoid40": {"hidden": [40], "activation": "sigmoid"},
    "relu20": {"hidden": [20], "activation": "relu"},
}
BASELINES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "SGD": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "RMSprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "Adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "NAG": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
}
LEARNING_RATES = [float(f"{10 ** (k / 2):.0e}") for k in range(-8, 3)]  # 1e-4, 3e-4, ... 10
LEARNED = "LSTM (learned)"
TUNING, TEST = 11, 12  # the phase index of the streams of initialisations and minibatches
INIT = reserved("learned_optimizer_mnist.init")
BATCHES = reserved("learned_optimizer_mnist.batches")


def meta_train(config: RunConfig, runs: Path, out: Path):
    """The meta-trained learner: trained now, resumed, or loaded from a finished run (whose
    folder, but its checkpoint, is copied to ``out/meta_training``)."""
    run_dir = runs / f"lstm_optimizer-mnist-seed{config.seed}"
    stored = run_dir / "config.yaml"
    if stored.is_file() and load_config(stored).result_settings() != config.result_settings():
        raise SystemExit(f"{run_dir} holds a meta-training run of another config (see {stored}); "
                         "pass another --runs or delete it")
    finished = (run_dir / "results.json").is_file() and load_results(run_dir).completed_tasks == 1
    if not finished:
        run(config, run_dir=run_dir, resume=(run_dir / "config.yaml").is_file())
    shutil.copytree(run_dir, out / "meta_training", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("checkpoint.pt"))
    _, _, learner, _ = build_run(config)
    learner.load_state_dict(load_checkpoint(run_dir / "checkpoint.pt")["learner"])
    return learner, run_dir


# Trains a model, as initialised, one step per minibatch; the minibatch loss before each step.
Trainer = Callable[[torch.nn.Module, list], list[float]]


class Problem:
    """One optimisee problem: a model architecture and reproducible (init, minibatches) pairs."""

    def __init__(self, learner, options: dict, seed: int, batch_size: int) -> None:
        stream, scenario = learner.context.stream, learner.context.scenario
        self.model = build_model("mlp", (1, 28, 28), stream.n_outputs(scenario), **options)
        self.model.to(learner.context.device)
        self.stream, self.scenario, self.seed, self.batch_size = stream, scenario, seed, batch_size

    def initialised(self, phase: int, k: int) -> torch.nn.Module:
        """The model at the k-th initialisation of ``phase`` (re-drawn in place)."""
        reinitialise(self.model, INIT.seed(self.seed, phase, k))
        return self.model

    def batches(self, phase: int, k: int, steps: int) -> list:
        """The k-th run of ``phase``'s minibatches."""
        batches = self.stream.train_batches(self.scenario, [0], self.batch_size,
                                            BATCHES.generator(self.seed, phase, k), seen=1)
        return list(islice(batches, steps))


def baseline(name: str, lr: float) -> Trainer:
    """A hand-designed optimizer of ``BASELINES`` at learning rate ``lr``."""
    def train(model: torch.nn.Module, batches: list) -> list[float]:
        optimizer, losses = BASELINES[name](model.parameters(), lr), []
        for batch in batches:
            loss = masked_cross_entropy(model(batch.x), batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    return train


def curves(problem: Problem, phase: int, n: int, steps: int,
           trainers: dict[Any, Trainer]) -> dict[Any, np.ndarray]:
    """[n, steps] losses of each trainer, all from the same n initialisations and minibatches
    (drawn once per initialisation); a diverged run's NaN counts as infinite."""
    out: dict[Any, list[list[float]]] = {}
    for k in range(n):
        batches = problem.batches(phase, k, steps)
        for key, train in trainers.items():
            out.setdefault(key, []).append(train(problem.initialised(phase, k), batches))
    arrays = {key: np.array(losses) for key, losses in out.items()}
    return {key: np.where(np.isnan(a), np.inf, a) for key, a in arrays.items()}


def tune(problem: Problem, n: int, steps: int) -> dict[str, dict]:
    """Per baseline: the grid's mean loss over the last 10 steps at each rate, and the best."""
    grid = curves(problem, TUNING, n, steps, {(name, lr): baseline(name, lr)
                                              for name in BASELINES for lr in LEARNING_RATES})
    tuned = {}
    for name in BASELINES:
        scores = {lr: float(grid[name, lr][:, -10:].mean()) for lr in LEARNING_RATES}
        tuned[name] = {"best": min(scores, key=scores.get), "grid": scores}
    return tuned


def summary_table(rows: list[dict]) -> Table:
    names = [LEARNED, *BASELINES]
    table = Table(title="Final minibatch loss (mean over initialisations, ± standard error)")
    for column in ["problem", "steps", *names]:
        table.add_column(column)
    for row in rows:
        best = min(names, key=lambda name: row["final"][name]["mean"])
        cells = []
        for name in names:
            final = row["final"][name]
            cell = f"{final['mean']:.3f} ± {final['sem']:.3f}"
            if name in row["lr"]:
                cell += f" (lr {row['lr'][name]:g})"
            cells.append(f"[bold]{cell}[/bold]" if name == best else cell)
        table.add_row(row["problem"], str(row["steps"]), *cells)
    return table


def log_to_wandb(mode: str, config: RunConfig, rows: list[dict], figures: list[Path]) -> None:
    mode = resolve_mode(mode)
    if mode == "disabled":
        return
    import wandb

    with wandb.init(project=config.wandb.project, mode=mode, job_type="learned-optimizer-curves",
                    group="learned_optimizer_mnist", config=config.model_dump(mode="json")) as wb:
        for row in rows:
            for name, final in row["final"].items():
                wb.summary[f"final_loss/{row['problem']}_{row['steps']}/{name}"] = final["mean"]
        wb.log({f"curves/{path.stem}": wandb.Image(str(path)) for path in figures})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--inits", type=int, default=20, help="test initialisations per curve")
    parser.add_argument("--tuning-inits", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--wandb", default="offline", choices=["auto", "online", "offline", "disabled"])
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="key=value")
    args = parser.parse_args()

    config = load_config(args.config, [f"wandb.mode={args.wandb}", *args.overrides])
    args.out.mkdir(parents=True, exist_ok=True)
    started = environment(resolve_device(config.device), config)  # the commit this code is from
    learner, run_dir = meta_train(config, args.runs, args.out)
    start = time.perf_counter()
    meta_training_s = load_results(run_dir).timings.get("train_s/task_0")
    rows, figures = [], []
    for problem_name in args.problems:
        options = {**config.model.options, **PROBLEMS[problem_name]}  # init_std and the like kept
        problem = Problem(learner, options, config.seed, config.protocol.batch_size)
        for steps in args.steps:
            tuned = tune(problem, args.tuning_inits, steps)
            rates = {name: t["best"] for name, t in tuned.items()}
            trainers = {LEARNED: learner.trajectory,
                        **{name: baseline(name, lr) for name, lr in rates.items()}}
            losses = curves(problem, TEST, args.inits, steps, trainers)
            figures.append(plot_loss_curves(
                losses, args.out / f"curves_{problem_name}_{steps}.png",
                f"MNIST MLP {problem_name}, {steps} steps, {args.inits} initialisations"))
            final = {name: {"mean": float(l[:, -1].mean()),
                            "sem": float(l[:, -1].std(ddof=1) / np.sqrt(len(l)))}
                     for name, l in losses.items()}
            rows.append({"problem": problem_name, "steps": steps, "final": final, "lr": rates,
                         "tuning": tuned, "curves": {n: l.mean(0).tolist() for n, l in losses.items()}})
            Console(width=160).print(summary_table(rows[-1:]))
    command = "python " + shlex.join(["benchmarks/learned_optimizer_mnist.py", *sys.argv[1:]])
    summary = {"command": command, "run_dir": str(run_dir), "meta_training_s": meta_training_s,
               "meta_training_steps": config.protocol.steps_per_task,
               "evaluation_s": time.perf_counter() - start, "inits": args.inits,
               "tuning_inits": args.tuning_inits, "learning_rates": LEARNING_RATES,
               "environment": started, "rows": rows}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (args.out / "summary.md").open("w") as handle:
        Console(file=handle, width=160).print(f"`{command}`\n", summary_table(rows))
    Console(width=160).print(summary_table(rows))
    log_to_wandb(args.wandb, config, rows, figures)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
