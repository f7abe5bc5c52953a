"""Wall time of whole Split MNIST runs for EWC and SI: ours against Avalanche and the FLOP floor.

Everything is measured in one invocation, on the same machine and threads:

- ours: ``metalearn run`` of benchmarks/split_mnist/{ewc,si}.yaml, class-IL (5 tasks x 2000
  iterations, batch 128, the Fisher over each task's whole training set, evaluation after every
  task included);
- Avalanche 0.6.0 with the same model, data, iterations and batch size
  (benchmarks/peers/avalanche_split_mnist.py);
- the arithmetic floor: the run's matrix-product FLOPs (counted by torch's FlopCounterMode,
  which counts matmuls and convolutions only: training steps, importance passes, evaluations)
  divided by the rate the machine reaches on the training step's own matrix products, timed
  back to back without anything else; elementwise work and the optimizer are not in it;
- the Fisher alone: ours against a loop of one backward pass per example.

    python benchmarks/plasticity_speed.py --data-root DATA   # writes benchmarks/results/plasticity_speed_<device>.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from metalearn.cli.config import load_config
from metalearn.cli.runner import build_run, run
from metalearn.learners.ewc import log_likelihood
from metalearn.seeding import reserved
from metalearn.tasks import Scenario

CONFIGS = Path(__file__).parent / "split_mnist"
RESULTS = Path(__file__).parent / "results"
NOTES = [
    "Avalanche 0.6.0's SynapticIntelligence stores its weight snapshots as "
    "param.detach().cpu().flatten(), which on the CPU is a view of the live parameter, not a copy: "
    "its importance stays 0 and its penalty 0, so its SI run here is of an unprotected network "
    "(and skips the copies a working SI makes). Its EWC works; its Fisher squares minibatch "
    "(128) gradients rather than per-example ones.",
    "The floor counts matrix products only (FlopCounterMode); the rate is the best of the "
    "measurements taken before and after the runs, on the training step's own matmul shapes.",
]
# Avalanche's conventions (see the peer script): EWC has no 1/2, SI has one.
AVALANCHE_STRENGTH = {"ewc": lambda ours: ours / 2, "si": lambda ours: 2 * ours}


class MatrixProducts(TorchDispatchMode):
    """Records the shapes of every mm/addmm an operation runs."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
            a, b = args[-2], args[-1]
            self.shapes.append((a.shape[0], a.shape[1], b.shape[1]))
        return func(*args, **(kwargs or {}))


def matmul_rate(shapes: list[tuple[int, int, int]], repeats: int = 2000) -> float:
    """FLOP/s of the given matrix products run back to back (the best of 5 timings)."""
    operands = [(torch.rand(m, k), torch.rand(k, n)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    for a, b in operands * 50:
        a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats // 5):
            for a, b in operands:
                a @ b
        best = min(best, (time.perf_counter() - start) / (repeats // 5))
    return flops / best


def flops_of(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def run_flops(config_path: Path, data_root: str) -> dict:
    """The FLOPs of a whole run of this config and the shapes of its training step's matmuls."""
    config = load_config(config_path, ["wandb.mode=disabled", "device=cpu", "scenario=class",
                                       f"data_root={data_root}"])
    stream, scenario, learner, _ = build_run(config)
    generator = reserved("train_batches").generator(0, 0)  # the protocol's, for seed 0
    batches = stream.train_batches(scenario, [0], config.protocol.batch_size, generator, seen=1)
    learner.begin_task(0)
    learner.train_step(next(batches))
    # end of task 1 (importance, if the learner estimates any), per training example
    per_example_end = flops_of(lambda: learner.end_task(0)) / len(stream[0].train)
    learner.begin_task(1)  # from here on every step carries the penalty, as on tasks 2-5
    batch = next(batches)
    with MatrixProducts() as products:
        learner.train_step(batch)
    step_flops = flops_of(lambda: learner.train_step(batch))
    test = next(stream.ordered_batches(scenario, 0, 10**6, seen=1))
    per_example_eval = flops_of(lambda: learner.predict(test.x, None)) / len(test)
    n_steps = len(stream) * config.protocol.steps_per_task
    n_train = sum(len(t.train) for t in stream)
    n_eval = (len(stream) + 1) * sum(len(t.test) for t in stream)  # before training and after each task
    total = n_steps * step_flops + n_train * per_example_end + n_eval * per_example_eval
    return {"flops_per_step": step_flops, "total_flops": total, "step_matmul_shapes": products.shapes}


def fisher_versus_loop(config_path: Path, data_root: str) -> dict:
    """Our Fisher over task 1's whole training set against one backward pass per example."""
    config = load_config(config_path, ["wandb.mode=disabled", "device=cpu", f"data_root={data_root}",
                                       "learner.options.fisher=empirical"])
    stream, scenario, learner, _ = build_run(config)
    data = next(stream.ordered_batches(scenario, 0, 10**6, seen=1, split="train"))
    start = time.perf_counter()
    ours = learner.importance(0)
    ours_s = time.perf_counter() - start
    model = learner.model.eval()
    start = time.perf_counter()
    looped = [torch.zeros_like(p) for p in model.parameters()]
    for n in range(len(data)):
        value = log_likelihood(model(data.x[n : n + 1]), data.allowed[n : n + 1], data.y[n : n + 1])
        for total, gradient in zip(looped, torch.autograd.grad(value.sum(), list(model.parameters()))):
            total += gradient.square()
    loop_s = time.perf_counter() - start
    error = max(float((a - b / len(data)).abs().max() / b.abs().max() * len(data)) for a, b in zip(ours, looped))
    return {"examples": len(data), "ours_s": ours_s, "per_example_loop_s": loop_s,
            "speedup": loop_s / ours_s, "max_relative_difference": error}


def ours(name: str, data_root: str, runs: Path) -> dict:
    config = load_config(CONFIGS / f"{name}.yaml", ["wandb.mode=disabled", "device=cpu", "scenario=class",
                                                   f"data_root={data_root}", f"output_dir={runs}"])
    start = time.perf_counter()
    results = run(config)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "acc": results.metrics["acc"], "strength": config.learner.options["strength"],
            "train_s_per_task": [results.timings[f"train_s/task_{i}"] for i in range(5)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("METALEARN_DATA", "").split(os.pathsep)[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/plasticity_speed"))
    parser.add_argument("--out", type=Path, default=RESULTS / "plasticity_speed_cpu.json")
    args = parser.parse_args()
    try:  # the peer, imported only now so that --help works without it
        from peers.avalanche_split_mnist import run_avalanche  # benchmarks/ is on the path
    except ImportError as error:
        raise SystemExit(f"{error}: this benchmark compares with Avalanche; install the peers "
                         "with `bash scripts/install_peers.sh`") from None

    report = {"command": "python benchmarks/plasticity_speed.py", "device": platform.processor() or "cpu",
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "torch": torch.__version__, "scenario": Scenario.CLASS.value, "notes": NOTES}
    report["fisher"] = fisher_versus_loop(CONFIGS / "ewc.yaml", args.data_root)
    print(f"fisher: {report['fisher']['ours_s']:.2f} s vs per-example loop "
          f"{report['fisher']['per_example_loop_s']:.1f} s ({report['fisher']['speedup']:.0f}x)")
    counts = {name: run_flops(CONFIGS / f"{name}.yaml", args.data_root) for name in ("ewc", "si")}
    shapes = counts["ewc"]["step_matmul_shapes"]
    rates = [matmul_rate(shapes)]
    for name in ("ewc", "si"):
        mine = ours(name, args.data_root, args.runs)
        peer = run_avalanche(name, strength=AVALANCHE_STRENGTH[name](mine["strength"]),
                             data_root=args.data_root, scenario="class")
        report[name] = {"flops": counts[name], "ours": mine,
                        "avalanche": {k: v for k, v in peer.items() if k != "accuracy_matrix"},
                        "avalanche_over_ours": peer["wall_s"] / mine["wall_s"]}
        print(f"{name}: ours {mine['wall_s']:.1f} s, Avalanche {peer['wall_s']:.1f} s "
              f"({report[name]['avalanche_over_ours']:.2f}x)")
        print(f"  train s per task: ours {[round(t, 1) for t in mine['train_s_per_task']]}, "
              f"Avalanche {[round(t, 1) for t in peer['train_s_per_task']]}")
    rates.append(matmul_rate(shapes))  # before and after the runs: the best is the machine's rate
    report["matmul_flops_per_s"] = {"measured": rates, "used": max(rates)}
    for name in ("ewc", "si"):
        floor_s = counts[name]["total_flops"] / max(rates)
        report[name].update(floor_s=floor_s, ours_over_floor=report[name]["ours"]["wall_s"] / floor_s)
        print(f"{name} floor: {counts[name]['total_flops'] / 1e12:.2f} TFLOP at {max(rates) / 1e9:.0f} "
              f"GFLOP/s = {floor_s:.1f} s; ours takes {report[name]['ours_over_floor']:.2f}x the floor")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
