"""Compare finished runs with published numbers: the reporting half of a comparison.

The runs come from ``metalearn sweep`` (docs/sweeps.md) or from hand-started ``metalearn
run``s; this script only reads their folders. The summary (mean and standard error over seeds
of ACC, BWT, FWT and forgetting, ACC beside the published value, for few-shot runs the 95%
confidence interval over test episodes, the validation accuracy where runs validated, and the
best grid point per learner and scenario by that validation accuracy) is printed and written to
``<out>/summary.json`` and ``<out>/summary.md``.

    metalearn sweep benchmarks/sweeps/split_mnist/baselines.yaml
    python benchmarks/compare.py runs/sweeps/split_mnist_baselines/summary.json \\
        --published benchmarks/split_mnist/published.yaml \\
        --out benchmarks/results/split_mnist_baselines

A sweep's ``summary.json`` names each trial's run folder, its config file's stem (rows and
published values are looked up by it: ``dgr_distill.yaml`` -> ``dgr_distill``) and its grid
point; a run folder given directly is named by its learner, or by LABEL in ``LABEL=FOLDER``:

    metalearn run benchmarks/omniglot/fomaml.yaml --run-dir runs/omniglot_fomaml
    python benchmarks/compare.py fomaml=runs/omniglot_fomaml --out benchmarks/results/omniglot_fomaml
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from metalearn.results import RunResults
from metalearn.tracking.run_folder import load_results

METRICS = ("acc", "bwt", "fwt", "forgetting")


def read_runs(arguments: list[str]) -> list[tuple[RunResults, str, dict]]:
    """The finished runs behind ``arguments`` (sweep summaries, run folders, or ``LABEL=FOLDER``
    to name a folder's row), each with its row label and grid point; a failed or unfinished run
    is left out with a note."""
    runs = []
    for argument in arguments:
        label, _, folder = argument.rpartition("=")
        path = Path(folder)
        if path.is_dir():
            entries = [{"run_dir": folder, "label": label or None, "settings": {}}]
        else:
            entries = [t for t in json.loads(path.read_text())["trials"] if t["status"] != "failed"]
        for entry in entries:
            result = load_results(entry["run_dir"])
            if result.completed_tasks < len(result.task_names):
                print(f"leaving out {entry['run_dir']}: it stopped after {result.completed_tasks} of "
                      f"{len(result.task_names)} tasks (run its sweep again to finish it)")
                continue
            runs.append((result, entry["label"] or result.learner, entry["settings"]))
    return runs


def summarize(results: list[tuple[RunResults, str, dict]], published: dict) -> list[dict]:
    """One row per learner, scenario and grid point: each metric's mean and standard error over
    seeds (in %), beside the published ACC."""
    groups: dict[tuple, list[RunResults]] = {}
    for result, label, point in results:
        groups.setdefault((label, result.scenario, json.dumps(point, sort_keys=True)), []).append(result)
    rows = []
    for (learner, scenario, point), runs in groups.items():
        reference = published.get(learner, {}).get(scenario or "fewshot")
        row = {"learner": learner, "scenario": scenario, "options": json.loads(point),
               "seeds": [r.seed for r in runs], "published": reference}
        for metric in (*METRICS, "val_acc"):
            values = np.array([100 * r.metrics.get(metric, np.nan) for r in runs])
            row[f"{metric}_mean"] = round(float(values.mean()), 2)
            row[f"{metric}_sem"] = (round(float(values.std(ddof=1) / np.sqrt(len(runs))), 2)
                                    if len(runs) > 1 else None)
        intervals = [r.metrics["acc_ci95"] for r in runs if r.metrics.get("acc_ci95") is not None]
        row["acc_ci95_mean"] = round(100 * float(np.mean(intervals)), 2) if intervals else None
        row["difference"] = None if reference is None else round(row["acc_mean"] - reference, 2)
        # seconds of training and evaluation (the run's timings), without start-up and data loading
        row["time_s_mean"] = round(float(np.mean([sum(r.timings.values()) for r in runs])), 1)
        rows.append(row)
    return rows


def best_options(rows: list[dict]) -> dict:
    """learner -> scenario -> the options of the grid point with the highest mean validation
    accuracy (never the test set's); rows of runs that did not validate are no candidates."""
    best: dict = {}
    validated = [row for row in rows if not np.isnan(row["val_acc_mean"])]
    for row in sorted(validated, key=lambda r: r["val_acc_mean"]):
        best.setdefault(row["learner"], {})[row["scenario"] or "fewshot"] = {
            key.rsplit(".", 1)[-1]: value for key, value in row["options"].items()}
    return best


def interval(half_width: float | None) -> str:
    return "" if half_width is None else f"± {half_width:.2f}"


def table(rows: list[dict]) -> Table:
    view = Table(title="Metrics over seeds (%, mean ± s.e.): ours vs published ACC")
    intervals = any(r["acc_ci95_mean"] is not None for r in rows)  # few-shot: over test episodes
    columns = ["learner", "scenario", *(["options"] if any(r["options"] for r in rows) else []),
               "seeds", "ACC", *(["95% CI of a run"] if intervals else []), "published",
               "difference", "BWT", "FWT", "forgetting",
               *(["validation ACC"] if any(not np.isnan(r["val_acc_mean"]) for r in rows) else [])]
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
                     str(row["difference"]), cell("bwt"), cell("fwt"), cell("forgetting"),
                     *([cell("val_acc")] if "validation ACC" in columns else []))
    return view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="sweep summaries (summary.json of metalearn "
                        "sweep), run folders, or LABEL=FOLDER (default label: the learner)")
    parser.add_argument("--published", type=Path, help="YAML: learner -> scenario -> ACC (%%)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    published = yaml.safe_load(args.published.read_text()) if args.published else {}
    rows = summarize(read_runs(args.runs), published.get("accuracy", {}))
    Console().print(table(rows))
    command = "python " + shlex.join(["benchmarks/compare.py", *sys.argv[1:]])
    summary = {"command": command, "published_source": published.get("source"), "rows": rows,
               "best_by_validation": best_options(rows)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (args.out / "summary.md").open("w") as handle:
        Console(file=handle, width=120).print(f"`{command}`\n", table(rows))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
