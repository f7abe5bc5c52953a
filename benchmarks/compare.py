"""Run several learners x scenarios x seeds and compare them with published numbers.

Each run is an ordinary ``metalearn run`` (its folder under ``--runs``, wandb grouped by
benchmark); its results, config and R heatmap are also copied to ``<out>/runs/``, so an interrupted
comparison resumes by skipping the runs already done (a stored run whose config differs is an
error) and a run cut off mid-way from its last completed task. The summary (mean and standard error over seeds of
ACC, BWT, FWT and forgetting, ACC beside the published value and, for few-shot runs, the 95%
confidence interval over test episodes) is printed and written to
``<out>/summary.json`` and ``<out>/summary.md``.

    python benchmarks/compare.py benchmarks/split_mnist/finetune.yaml \\
        benchmarks/split_mnist/joint.yaml --scenarios task domain class --seeds 0 1 2 \\
        --published benchmarks/split_mnist/published.yaml \\
        --out benchmarks/results/split_mnist_baselines

A learner is skipped in the scenarios it does not support (PackNet: task-IL only). Rows are
named by their config file's stem (``dgr_distill.yaml`` -> ``dgr_distill``), so one
learner with different options makes several rows; published values and tuned options are
looked up by that name.

Tuning: ``--grid learner.options.strength=1e5,1e6`` runs every grid point (on a validation
split with ``--set benchmark.options.validation=0.1``) and ``--write-best FILE`` records the
best point per learner and scenario; ``--tuned FILE`` applies those options to later runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import get_learner
from metalearn.results import RunResults

METRICS = ("acc", "bwt", "fwt", "forgetting")


def grid_points(grid: list[str]) -> list[dict[str, str]]:
    """``["a=1,2", "b=x"]`` -> ``[{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]``."""
    keys, values = [], []
    for entry in grid:
        key, _, choices = entry.partition("=")
        keys.append(key)
        values.append(choices.split(","))
    return [dict(zip(keys, point)) for point in itertools.product(*values)]


def tuned_overrides(tuned: dict, learner: str, scenario: str | None) -> list[str]:
    options = tuned.get(learner, {}).get(scenario or "fewshot", {})
    return [f"learner.options.{key}={value}" for key, value in options.items()]


def run_all(args: argparse.Namespace) -> list[tuple[RunResults, str, dict[str, str]]]:
    done = args.out / "runs"
    done.mkdir(parents=True, exist_ok=True)
    tuned = yaml.safe_load(args.tuned.read_text()) if args.tuned else {}
    results = []
    for config_path, scenario, point, seed in itertools.product(
            args.configs, args.scenarios or [None], grid_points(args.grid), args.seeds):
        overrides = [f"seed={seed}", f"wandb.mode={args.wandb}", f"output_dir={args.runs}",
                     *([f"scenario={scenario}"] if scenario else []), *args.overrides]
        given = load_config(config_path, overrides).scenario  # the config's own, if not given
        scenario = given.value if given is not None else None
        label = config_path.stem
        overrides += [*tuned_overrides(tuned, label, scenario),
                      *(f"{key}={value}" for key, value in point.items())]
        config = load_config(config_path, overrides)
        supported = {s.value for s in get_learner(config.learner.name).scenarios}
        if scenario is not None and scenario not in supported:
            print(f"skipping {label} in {scenario}-IL: it supports {sorted(supported)} only")
            continue
        tag = "".join(f"-{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())
        name = f"{label}-{scenario or 'fewshot'}{tag}-seed{seed}"
        settings = config.result_settings()
        if (done / f"{name}.json").exists():
            stored = done / f"{name}.yaml"
            if stored.exists() and stored.read_text() != settings:
                raise SystemExit(f"{done / name}.json was run with another config than this one "
                                 f"(see {stored}); delete it or choose another --out")
            results.append((RunResults.from_dict(json.loads((done / f"{name}.json").read_text())),
                            label, point))
            continue
        run_dir = Path(config.output_dir) / config.benchmark.name / name
        start = time.perf_counter()
        result = run(config, run_dir=run_dir, resume=(run_dir / "config.yaml").exists())
        result.timings["wall_s"] = time.perf_counter() - start
        (done / f"{name}.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        (done / f"{name}.yaml").write_text(settings)
        shutil.copyfile(run_dir / "accuracy_matrix.png", done / f"{name}.png")
        results.append((result, label, point))
    return results


def summarize(results: list[tuple[RunResults, str, dict[str, str]]], published: dict) -> list[dict]:
    groups: dict[tuple, list[RunResults]] = {}
    for result, label, point in results:
        groups.setdefault((label, result.scenario, tuple(point.items())), []).append(result)
    rows = []
    for (learner, scenario, point), runs in groups.items():
        reference = published.get(learner, {}).get(scenario or "fewshot")
        row = {"learner": learner, "scenario": scenario, "options": dict(point),
               "seeds": [r.seed for r in runs], "published": reference}
        for metric in METRICS:
            values = np.array([100 * r.metrics.get(metric, np.nan) for r in runs])
            row[f"{metric}_mean"] = round(float(values.mean()), 2)
            row[f"{metric}_sem"] = (round(float(values.std(ddof=1) / np.sqrt(len(runs))), 2)
                                    if len(runs) > 1 else None)
        intervals = [r.metrics["acc_ci95"] for r in runs if r.metrics.get("acc_ci95") is not None]
        row["acc_ci95_mean"] = round(100 * float(np.mean(intervals)), 2) if intervals else None
        row["difference"] = None if reference is None else round(row["acc_mean"] - reference, 2)
        row["wall_s_mean"] = round(float(np.mean([r.timings.get("wall_s", np.nan) for r in runs])), 1)
        rows.append(row)
    return rows


def number(text: str) -> float | str:
    """A grid value as a number where it is one (YAML reads "1e5" as a string)."""
    try:
        return float(text)
    except ValueError:
        return text


def best_options(rows: list[dict]) -> dict:
    """learner -> scenario -> the options of the grid point with the highest mean ACC."""
    best: dict = {}
    for row in sorted(rows, key=lambda r: r["acc_mean"]):
        best.setdefault(row["learner"], {})[row["scenario"] or "fewshot"] = {
            key.rsplit(".", 1)[-1]: number(value) for key, value in row["options"].items()}
    return best


def interval(half_width: float | None) -> str:
    return "" if half_width is None else f"± {half_width:.2f}"


def table(rows: list[dict]) -> Table:
    view = Table(title="Metrics over seeds (%, mean ± s.e.): ours vs published ACC")
    intervals = any(r["acc_ci95_mean"] is not None for r in rows)  # few-shot: over test episodes
    columns = ["learner", "scenario", *(["options"] if any(r["options"] for r in rows) else []),
               "seeds", "ACC", *(["95% CI of a run"] if intervals else []), "published",
               "difference", "BWT", "FWT", "forgetting"]
    for column in columns:
        view.add_column(column)
    for row in rows:
        def cell(metric: str) -> str:
            error = row[f"{metric}_sem"]
            return f"{row[f'{metric}_mean']:.2f}" + ("" if error is None else f" ± {error:.2f}")
        options = [" ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in row["options"].items())]
        view.add_row(row["learner"], str(row["scenario"]), *(options if "options" in columns else []),
                     str(len(row["seeds"])), cell("acc"),
                     *([interval(row["acc_ci95_mean"])] if intervals else []), str(row["published"]),
                     str(row["difference"]), cell("bwt"), cell("fwt"), cell("forgetting"))
    return view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--scenarios", nargs="*", default=[],
                        help="run every config in each of these (default: each config's own)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--published", type=Path, help="YAML: learner -> scenario -> ACC (%%)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", default="runs", help="where the run folders go")
    parser.add_argument("--wandb", default="offline", choices=["auto", "online", "offline", "disabled"])
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="key=value",
                        help="overrides applied to every run, e.g. protocol.steps_per_task=500")
    parser.add_argument("--grid", nargs="*", default=[], metavar="key=v1,v2",
                        help="run every combination of these values")
    parser.add_argument("--tuned", type=Path, help="YAML: learner -> scenario -> options")
    parser.add_argument("--write-best", type=Path,
                        help="merge the best grid point per learner and scenario into this YAML")
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
    if args.write_best:
        best = yaml.safe_load(args.write_best.read_text()) if args.write_best.exists() else {}
        for learner, scenarios in best_options(rows).items():
            best.setdefault(learner, {}).update(scenarios)
        args.write_best.write_text(f"# written by {command}\n" + yaml.safe_dump(best))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
