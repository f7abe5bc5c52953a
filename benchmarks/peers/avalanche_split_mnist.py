"""Avalanche (avalanche-lib 0.6.0) on Split MNIST: a peer timing reference for our benchmarks.

The setup mirrors ``benchmarks/split_mnist/*.yaml`` (van de Ven & Tolias 2019): digits
(0,1), (2,3), (4,5), (6,7), (8,9) in that order, a 784-400-400 ReLU MLP, Adam (lr 1e-3),
minibatch 128 and a fixed number of minibatches per task, with the test sets of all five
tasks evaluated after each task. Inputs are raw pixels in [0, 1], as in our runs (Avalanche's
default MNIST normalisation is switched off).

``strength`` goes to Avalanche unchanged, so mind its conventions: EWC's penalty is
``ewc_lambda * sum(F * (p - p_old)^2)`` (no 1/2) and SI's is
``si_lambda / 2 * sum(omega * (p - p_old)^2)``.

    python benchmarks/peers/avalanche_split_mnist.py ewc --strength 5e7 \\
        --data-root /work/shared/data
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from avalanche.benchmarks.classic import SplitMNIST
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models import MultiHeadClassifier, MultiTaskModule
from avalanche.training import EWC, Naive, SynapticIntelligence
from avalanche.training.determinism.rng_manager import RNGManager
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from torch import nn

N_TASKS = 5
HIDDEN = 400
BATCH_SIZE = 128
EVAL_BATCH_SIZE = 1000
LR = 1e-3
STRATEGIES = ("naive", "ewc", "si")
SCENARIOS = ("task", "domain", "class")
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class StopAfterIterations(SupervisedPlugin):
    """Ends training on each experience after a fixed number of minibatches."""

    def __init__(self, iterations: int):
        super().__init__()
        self.iterations = iterations
        self.done = 0

    def before_training_exp(self, strategy, **kwargs):
        self.done = 0

    def after_training_iteration(self, strategy, **kwargs):
        self.done += 1
        if self.done == self.iterations:
            strategy.stop_training()


class MultiHeadMLP(MultiTaskModule):
    """The shared MLP trunk with one 2-unit Avalanche head per task (task-incremental)."""

    def __init__(self):
        super().__init__()
        self.features = _trunk()
        self.classifier = MultiHeadClassifier(HIDDEN, initial_out_features=2, masking=False)

    def forward_single_task(self, x, task_label):
        return self.classifier(self.features(x), task_label)


def _trunk() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(28 * 28, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU()
    )


def _model(scenario: str) -> nn.Module:
    if scenario == "task":
        return MultiHeadMLP()
    return nn.Sequential(_trunk(), nn.Linear(HIDDEN, 10 if scenario == "class" else 2))


def _split_mnist(scenario: str, data_root: str):
    """Avalanche's SplitMNIST, fed from ``<data_root>/MNIST/raw/*.gz`` without any download.

    torchvision's MNIST (which Avalanche wraps) only looks for the decompressed files and
    would otherwise try to download and extract next to the archives, so the archives are
    decompressed into a temporary torchvision-layout folder; the dataset is held in memory
    once built, so the folder can go straight away.
    """
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "MNIST", "raw")
        raw.mkdir(parents=True)
        for name in _MNIST_FILES:
            with gzip.open(Path(data_root, "MNIST", "raw", f"{name}.gz")) as src:
                with open(raw / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        return SplitMNIST(
            n_experiences=N_TASKS,
            return_task_id=scenario == "task",
            fixed_class_order=list(range(10)),
            class_ids_from_zero_in_each_exp=scenario != "class",
            train_transform=None,
            eval_transform=None,
            dataset_root=tmp,
        )


def _strategy(name: str, model: nn.Module, iterations: int, strength: float, eps: float):
    common = dict(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999)),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=BATCH_SIZE,
        # An epoch is at least one minibatch, so this many is always enough; the plugin stops.
        train_epochs=iterations,
        eval_mb_size=EVAL_BATCH_SIZE,
        plugins=[StopAfterIterations(iterations)],
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
    )
    if name == "naive":
        return Naive(**common)
    if name == "ewc":
        return EWC(ewc_lambda=strength, mode="separate", **common)
    if name == "si":
        return SynapticIntelligence(si_lambda=strength, eps=eps, **common)
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")


def run_avalanche(
    strategy: str,
    *,
    iterations_per_task: int = 2000,
    strength: float,
    data_root: str,
    seed: int = 0,
    scenario: str = "class",
    eps: float = 0.1,
) -> dict:
    """Train ``strategy`` through the five tasks, evaluating all test sets after each task.

    ``strength`` is EWC's ``ewc_lambda`` or SI's ``si_lambda`` (ignored by ``naive``); ``eps``
    is SI's damping. ``wall_s`` covers data setup, training and evaluation.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {SCENARIOS}")
    start = time.perf_counter()
    RNGManager.set_random_seeds(seed)
    benchmark = _split_mnist(scenario, data_root)
    learner = _strategy(strategy, _model(scenario), iterations_per_task, strength, eps)

    train_s, eval_s, accuracy = [], [], []
    for experience in benchmark.train_stream:
        tick = time.perf_counter()
        learner.train(experience)
        tock = time.perf_counter()
        metrics = learner.eval(benchmark.test_stream)
        eval_s.append(time.perf_counter() - tock)
        train_s.append(tock - tick)
        accuracy.append([_accuracy(metrics, j) for j in range(N_TASKS)])
    wall_s = time.perf_counter() - start

    return {
        "strategy": strategy,
        "scenario": scenario,
        "wall_s": wall_s,
        "train_s_per_task": train_s,
        "eval_s_per_task": eval_s,
        "accuracy_matrix": accuracy,
        "final_average_accuracy": sum(accuracy[-1]) / N_TASKS,
    }


def _accuracy(metrics: dict, experience: int) -> float:
    """Test accuracy on one experience, from Avalanche's ``Top1_Acc_Exp/.../ExpNNN`` entries."""
    suffix = f"/Exp{experience:03d}"
    (value,) = [
        v for k, v in metrics.items()
        if k.startswith("Top1_Acc_Exp/eval_phase/test_stream/") and k.endswith(suffix)
    ]
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("strategy", choices=STRATEGIES)
    parser.add_argument("--strength", type=float, default=0.0,
                        help="EWC's ewc_lambda or SI's si_lambda (Avalanche's conventions)")
    parser.add_argument("--eps", type=float, default=0.1, help="SI's damping")
    parser.add_argument("--scenario", choices=SCENARIOS, default="class")
    parser.add_argument("--iterations-per-task", type=int, default=2000)
    parser.add_argument("--data-root", required=True,
                        help="folder holding MNIST/raw/*-ubyte.gz (torchvision layout)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run_avalanche(
        args.strategy,
        iterations_per_task=args.iterations_per_task,
        strength=args.strength,
        data_root=args.data_root,
        seed=args.seed,
        scenario=args.scenario,
        eps=args.eps,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
