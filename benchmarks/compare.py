"""Run several learners x scenarios x seeds and compare them with published numbers.

Each run is an ordinary ``metalearn run`` (its folder under ``--runs``, wandb grouped by
benchmark); its results are also copied to ``<out>/runs/`` so an interrupted comparison
resumes by skipping the runs already done. The summary (mean and standard error of ACC over
seeds, beside the published value) is printed and written to ``<out>/summary.json`` and
``<out>/summary.md``.

    python benchmarks/compare.py benchmarks/split_mnist/finetune.yaml \\
        benchmarks/split_mnist/joint.yaml --scenarios task domain class --seeds 0 1 2 \\
        --published benchmarks/split_mnist/published.yaml \\
        --out benchmarks/results/split_mnist_baselines
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.results import RunResults


def run_all(args: argparse.Namespace) -> list[RunResults]:
    done = args.out / "runs"
    done.mkdir(parents=True, exist_ok=True)
    results = []
    for config_path in args.configs:
        for scenario in args.scenarios or [None]:
            for seed in args.seeds:
                overrides = [f"seed={seed}", f"wandb.mode={args.wandb}", f"output_dir={args.runs}",
                             *([f"scenario={scenario}"] if scenario else []), *args.overrides]
                config = load_config(config_path, overrides)
                name = f"{config.learner.name}-{scenario or 'fewshot'}-seed{seed}.json"
                if (done / name).exists():
                    results.append(RunResults.from_dict(json.loads((done / name).read_text())))
                    continue
                start = time.perf_counter()
                result = run(config)
                result.timings["wall_s"] = time.perf_counter() - start
                (done / name).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
                results.append(result)
    return results


def summarize(results: list[RunResults], published: dict) -> list[dict]:
    rows = []
    groups: dict[tuple[str, str | None], list[RunResults]] = {}
    for result in results:
        groups.setdefault((result.learner, result.scenario), []).append(result)
    for (learner, scenario), runs in groups.items():
        accuracies = np.array([100 * r.metrics["acc"] for r in runs])
        error = accuracies.std(ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else float("nan")
        reference = published.get(learner, {}).get(scenario or "fewshot")
        rows.append({
            "learner": learner, "scenario": scenario, "seeds": [r.seed for r in runs],
            "acc_mean": round(float(accuracies.mean()), 2), "acc_sem": round(float(error), 2),
            "published": reference,
            "difference": None if reference is None else round(float(accuracies.mean()) - reference, 2),
            "bwt_mean": round(float(np.mean([100 * r.metrics["bwt"] for r in runs])), 2),
            "wall_s_mean": round(float(np.mean([r.timings.get("wall_s", np.nan) for r in runs])), 1),
        })
    return rows


def table(rows: list[dict]) -> Table:
    view = Table(title="Average accuracy over seeds (%): ours vs published")
    for column in ("learner", "scenario", "seeds", "ACC mean ± s.e.", "published", "difference", "BWT"):
        view.add_column(column)
    for row in rows:
        view.add_row(row["learner"], str(row["scenario"]), str(len(row["seeds"])),
                     f"{row['acc_mean']:.2f} ± {row['acc_sem']:.2f}", str(row["published"]),
                     str(row["difference"]), f"{row['bwt_mean']:.2f}")
    return view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--scenarios", nargs="*", default=[])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--published", type=Path, help="YAML: learner -> scenario -> ACC (%)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", default="runs", help="where the run folders go")
    parser.add_argument("--wandb", default="offline", choices=["auto", "online", "offline", "disabled"])
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="key=value",
                        help="overrides applied to every run, e.g. protocol.steps_per_task=500")
    args = parser.parse_args()

    results = run_all(args)
    published = yaml.safe_load(args.published.read_text()) if args.published else {}
    rows = summarize(results, published.get("accuracy", {}))
    Console().print(table(rows))
    command = "python " + shlex.join(["benchmarks/compare.py", *sys.argv[1:]])
    summary = {"command": command, "published_source": published.get("source"), "rows": rows}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (args.out / "summary.md").open("w") as handle:
        Console(file=handle, width=120).print(f"`{command}`\n", table(rows))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
