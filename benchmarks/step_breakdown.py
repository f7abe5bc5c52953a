"""Where a Split MNIST training step of EWC spends its time, and what two choices bought.

Measured on the class-IL config after task 1 (so the penalty is on), median of repeated timings:

- the whole ``train_step``; its matrix products alone, run back to back; the penalty's update;
- the Adam step, fused (what learners use) against PyTorch's default on this device;
- one task's Fisher, factored (``summed_gradient_powers``) against materialised ``vmap(grad)``;
- importing the command line, with and without torchvision's transforms.

    python benchmarks/step_breakdown.py   # writes benchmarks/results/step_breakdown_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from metalearn.cli.config import load_config
from metalearn.cli.runner import build_run
from metalearn.learners.ewc import log_likelihood
from metalearn.learners.plasticity import per_example_gradients
from metalearn.seeding import reserved
from plasticity_speed import MatrixProducts  # benchmarks/ is on the path

CONFIG = Path(__file__).parent / "split_mnist" / "ewc.yaml"
OUT = Path(__file__).parent / "results" / "step_breakdown_cpu.json"


def median_ms(function, repeats: int = 300) -> float:
    for _ in range(30):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def import_seconds(code: str) -> float:
    """Best of three wall times of a fresh interpreter running ``code``."""
    return min(seconds(lambda: subprocess.run([sys.executable, "-c", code], check=True)) for _ in range(3))


def main() -> None:
    config = load_config(CONFIG, ["wandb.mode=disabled", "device=cpu", "scenario=class"])
    stream, scenario, learner, _ = build_run(config)
    generator = reserved("train_batches").generator(0, 0)  # the protocol's, for seed 0
    batches = stream.train_batches(scenario, [0], 128, generator, seen=1)
    for _ in range(200):
        learner.train_step(next(batches))
    learner.end_task(0)
    batch = next(batches)
    report: dict = {"command": "python benchmarks/step_breakdown.py", "torch_threads": torch.get_num_threads()}

    report["train_step_ms"] = median_ms(lambda: learner.train_step(batch))
    with MatrixProducts() as products:
        learner.train_step(batch)
    operands = [(torch.rand(m, k), torch.rand(k, n)) for m, k, n in products.shapes]
    report["matmuls_alone_ms"] = median_ms(lambda: [a @ b for a, b in operands])
    report["penalty_ms"] = median_ms(lambda: learner.penalty.add_gradient_(1.0))
    report["adam_fused_ms"] = median_ms(learner.optimizer.step)
    default = torch.optim.Adam(learner.model.parameters(), lr=1e-3)
    report["adam_default_ms"] = median_ms(default.step)

    report["fisher_factored_s"] = seconds(lambda: learner.importance(0))
    parameters = learner.parameters

    def materialised() -> None:
        for chunk in learner.task_batches(0):
            labels = learner.model(chunk.x).detach().argmax(1)
            gradients = per_example_gradients(learner.model, log_likelihood, chunk.x, chunk.allowed,
                                              labels, parameters)
            [g.square().sum(0) for g in gradients]

    report["fisher_vmap_materialised_s"] = seconds(materialised)

    report["import_cli_s"] = import_seconds("import metalearn.cli.main")
    report["import_cli_with_torchvision_transforms_s"] = import_seconds(
        "import metalearn.cli.main, torchvision.transforms.v2")
    for key, value in report.items():
        print(f"{key}: {value if isinstance(value, (str, int)) else round(value, 3)}")
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {OUT}")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # only --help
    main()
