"""Wall time of whole Split MNIST runs for EWC and SI: ours against Avalanche and the FLOP floor.

Everything is measured in one invocation, on the same machine and threads. Ours and Avalanche
take turns (``--repeats`` rounds, the order swapped every round, so a machine that speeds up or
slows down during the run affects both alike), and each is reported by its median wall time with
the spread (min, max) of its runs:

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

Flags: ``--repeats N`` rounds of ours and Avalanche (default 3); ``--device`` runs ours and the
floor's matrix products there (Avalanche's peer script runs on the CPU, so on a GPU pass
``--without-avalanche``); ``--steps-per-task N`` shortens every run (a smoke check, not a
result); ``--without-avalanche`` times ours against the floor alone; ``--skip-fisher`` leaves
out the Fisher comparison (which runs on the CPU); ``--learners`` picks EWC, SI or both;
``--matmul-repeats`` sets how long the floor's rate is measured (fewer: quicker, noisier).

    python benchmarks/plasticity_speed.py --data-root DATA   # writes benchmarks/results/plasticity_speed_<device>.json
    python benchmarks/plasticity_speed.py --device cuda --without-avalanche --repeats 1
    python benchmarks/plasticity_speed.py --repeats 1 --steps-per-task 2 --skip-fisher --learners si \
        --matmul-repeats 20 --without-avalanche --out /tmp/p.json          # smoke check, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
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


def matmul_rate(shapes: list[tuple[int, int, int]], device: torch.device, repeats: int = 2000) -> float:
    """FLOP/s of the given matrix products run back to back on ``device`` (the best of 5 timings)."""
    operands = [(torch.rand(m, k, device=device), torch.rand(k, n, device=device)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    for a, b in operands * 50:
        a @ b
    best = float("inf")
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats // 5):
            for a, b in operands:
                a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - start) / (repeats // 5))
    return flops / best


def flops_of(function) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def run_flops(config_path: Path, data_root: str, steps_per_task: int | None) -> dict:
    """The FLOPs of a whole run of this config and the shapes of its training step's matmuls."""
    config = load_config(config_path, ["wandb.mode=disabled", "device=cpu", "scenario=class",
                                       f"data_root={data_root}", *steps_override(steps_per_task)])
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


def steps_override(steps_per_task: int | None) -> list[str]:
    return [] if steps_per_task is None else [f"protocol.steps_per_task={steps_per_task}"]


def ours(name: str, data_root: str, runs: Path, device: str, steps_per_task: int | None) -> dict:
    config = load_config(CONFIGS / f"{name}.yaml", ["wandb.mode=disabled", f"device={device}", "scenario=class",
                                                   f"data_root={data_root}", f"output_dir={runs}",
                                                   *steps_override(steps_per_task)])
    start = time.perf_counter()
    results = run(config)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "acc": results.metrics["acc"],
            "train_s_per_task": [results.timings[f"train_s/task_{i}"] for i in range(5)]}


def summary(runs: list[dict]) -> dict:
    """The runs of one implementation: the median wall time, its spread, and every run."""
    walls = [r["wall_s"] for r in runs]
    return {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls), "runs": runs}


def interleaved(name: str, args: argparse.Namespace, run_avalanche) -> dict:
    """``args.repeats`` rounds of ours and Avalanche on ``name``, the order swapped every round."""
    strength = load_config(CONFIGS / f"{name}.yaml", []).learner.options["strength"]
    contenders = {"ours": lambda: ours(name, args.data_root, args.runs, args.device, args.steps_per_task)}
    if run_avalanche is not None:
        contenders["avalanche"] = lambda: {k: v for k, v in run_avalanche(
            name, strength=AVALANCHE_STRENGTH[name](strength), data_root=args.data_root, scenario="class",
            **({} if args.steps_per_task is None else {"iterations_per_task": args.steps_per_task}),
        ).items() if k != "accuracy_matrix"}
    runs: dict[str, list[dict]] = {contender: [] for contender in contenders}
    order = list(contenders)
    for round_ in range(args.repeats):
        for contender in order if round_ % 2 == 0 else order[::-1]:
            runs[contender].append(contenders[contender]())
            print(f"{name} round {round_ + 1}: {contender} {runs[contender][-1]['wall_s']:.1f} s", flush=True)
    report = {"strength": strength, **{contender: summary(r) for contender, r in runs.items()}}
    if "avalanche" in report:
        report["avalanche_over_ours"] = report["avalanche"]["median_s"] / report["ours"]["median_s"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("METALEARN_DATA", "").split(os.pathsep)[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/plasticity_speed"))
    parser.add_argument("--device", default="cpu", help="where ours and the floor run (default: cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of ours and Avalanche, taking turns")
    parser.add_argument("--steps-per-task", type=int, help="shorter runs, for a smoke check (default: the configs')")
    parser.add_argument("--without-avalanche", action="store_true", help="ours against the floor only")
    parser.add_argument("--skip-fisher", action="store_true", help="leave out the Fisher comparison")
    parser.add_argument("--learners", nargs="+", choices=["ewc", "si"], default=["ewc", "si"])
    parser.add_argument("--matmul-repeats", type=int, default=2000, help="rounds of the floor's matmul timing")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/plasticity_speed_<device type>.json")
    args = parser.parse_args()
    run_avalanche = None
    if not args.without_avalanche:
        try:  # the peer, imported only now so that --help works without it
            from peers.avalanche_split_mnist import run_avalanche  # benchmarks/ is on the path
        except ImportError as error:
            raise SystemExit(f"{error}: this benchmark compares with Avalanche; install the peers "
                             "with `bash scripts/install_peers.sh`, or pass --without-avalanche") from None
    device = torch.device(args.device)

    report = {"command": "python " + shlex.join(sys.argv), "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else platform.processor() or "cpu",
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "torch": torch.__version__, "scenario": Scenario.CLASS.value, "repeats": args.repeats,
              "steps_per_task": args.steps_per_task or "the configs'", "notes": NOTES}
    if not args.skip_fisher:
        report["fisher"] = fisher_versus_loop(CONFIGS / "ewc.yaml", args.data_root)
        print(f"fisher: {report['fisher']['ours_s']:.2f} s vs per-example loop "
              f"{report['fisher']['per_example_loop_s']:.1f} s ({report['fisher']['speedup']:.0f}x)")
    counts = {name: run_flops(CONFIGS / f"{name}.yaml", args.data_root, args.steps_per_task)
              for name in args.learners}
    shapes = counts[args.learners[0]]["step_matmul_shapes"]  # the same MLP and batch for both
    rates = [matmul_rate(shapes, device, args.matmul_repeats)]
    for name in args.learners:
        report[name] = {"flops": counts[name], **interleaved(name, args, run_avalanche)}
    rates.append(matmul_rate(shapes, device, args.matmul_repeats))  # before and after the runs: the best is the machine's rate
    report["matmul_flops_per_s"] = {"measured": rates, "used": max(rates)}
    for name in args.learners:
        floor_s = counts[name]["total_flops"] / max(rates)
        ours_runs = report[name]["ours"]
        report[name].update(floor_s=floor_s, ours_over_floor={
            key: ours_runs[f"{key}_s"] / floor_s for key in ("median", "min", "max")})
        line = (f"{name}: ours {ours_runs['median_s']:.1f} s (median; {ours_runs['min_s']:.1f}-"
                f"{ours_runs['max_s']:.1f}), {report[name]['ours_over_floor']['median']:.2f}x the floor "
                f"of {floor_s:.1f} s")
        if "avalanche" in report[name]:
            peer = report[name]["avalanche"]
            line += (f"; Avalanche {peer['median_s']:.1f} s ({peer['min_s']:.1f}-{peer['max_s']:.1f}), "
                     f"{report[name]['avalanche_over_ours']:.2f}x ours")
        print(line)
    out = args.out or RESULTS / f"plasticity_speed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
