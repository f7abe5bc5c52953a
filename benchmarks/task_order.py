"""The effect of task order on forgetting: one learner, the same seed, several curricula.

Runs a config under the identity order, the reversed order and ``--random`` orders drawn from
``--order-seed``, and plots ACC, BWT and forgetting per order (``<out>/task_order.png``) beside
``<out>/task_order.json``. Everything but the order is the same (model initialisation, batches
per task position, seed), so the spread is the order's.

    python benchmarks/task_order.py benchmarks/split_mnist/ewc.yaml --set scenario=domain \\
        --out benchmarks/results/task_order/ewc-domain
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure

from metalearn.cli.config import load_config
from metalearn.cli.runner import build_stream, run

METRICS = ("acc", "bwt", "forgetting")


def orders(n_tasks: int, n_random: int, seed: int) -> list[list[int]]:
    """The identity, the reversed order and ``n_random`` other distinct orders (fewer if the
    tasks have fewer permutations)."""
    identity = list(range(n_tasks))
    chosen = [identity, identity[::-1]]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(100 * n_random):
        if len(chosen) == 2 + n_random:
            break
        order = torch.randperm(n_tasks, generator=generator).tolist()
        if order not in chosen:
            chosen.append(order)
    return chosen


def plot(rows: list[dict], path: Path) -> None:
    figure = Figure(figsize=(2 + 1.2 * len(rows), 3.5), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(METRICS)
    for k, metric in enumerate(METRICS):
        axes.bar([i + k * width for i in range(len(rows))], [100 * r[metric] for r in rows],
                 width, label=metric.upper() if metric != "forgetting" else "forgetting")
    axes.set_xticks([i + width for i in range(len(rows))],
                    ["-".join(map(str, r["order"])) for r in rows], rotation=20)
    axes.set_xlabel("task order")
    axes.set_ylabel("%")
    axes.axhline(0, color="black", linewidth=0.5)
    axes.legend()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--random", type=int, default=3, help="random orders besides identity and reversed")
    parser.add_argument("--order-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="key=value")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    base = [f"output_dir={args.runs}", "wandb.mode=disabled", *args.overrides]
    stream, _ = build_stream(load_config(args.config, base), torch.device("cpu"))
    rows = []
    for order in orders(len(stream), args.random, args.order_seed):
        config = load_config(args.config, [*base, f"task_order={order}"])
        run_dir = Path(args.runs) / config.benchmark.name / f"{config.learner.name}-order-{'-'.join(map(str, order))}"
        results = run(config, run_dir=run_dir, resume=(run_dir / "config.yaml").exists())
        rows.append({"order": order, "tasks": results.task_names,
                     **{m: results.metrics[m] for m in METRICS},
                     "final_accuracy": results.accuracy[-1].tolist()})
        print(f"order {order}: " + ", ".join(f"{m} {100 * results.metrics[m]:.2f}" for m in METRICS))
    command = "python " + shlex.join(["benchmarks/task_order.py", *sys.argv[1:]])
    (args.out / "task_order.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    plot(rows, args.out / "task_order.png")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
