"""A sweep's summary (a rich table, written as JSON and Markdown beside its runs) and its best
setting, written in the format configs read (``benchmarks/split_mnist/tuned.yaml``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from metalearn.sweep.spec import SweepSpec


def summary_table(rows: list[dict[str, Any]], metric: str) -> Table:
    view = Table(title=f"Sweep trials: {metric} of each run")
    for column in ("config", "settings", "seed", "status", metric, "run folder or error"):
        view.add_column(column, overflow="fold")
    for row in rows:
        value = row[metric]
        view.add_row(row["label"], " ".join(f"{key}={v}" for key, v in row["settings"].items()),
                     str(row["seed"]), row["status"] or "", "" if value is None else f"{value:.4f}",
                     row["error"] or row["run_dir"])
    return view


def write_summary(rows: list[dict[str, Any]], spec: SweepSpec, command: str) -> Path:
    """``summary.json`` and ``summary.md`` in the sweep's output folder; the folder."""
    folder = spec.output_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(
        {"command": command, "metric": spec.metric, "mode": spec.mode, "trials": rows}, indent=2) + "\n")
    with (folder / "summary.md").open("w") as handle:
        Console(file=handle, width=160).print(f"`{command}`\n", summary_table(rows, spec.metric))
    return folder


def best_settings(rows: list[dict[str, Any]], spec: SweepSpec) -> dict[str, dict[str, dict]]:
    """config -> scenario ("fewshot" without one) -> the settings with the best mean metric over
    seeds; ``learner.options.x`` is written ``x``, as tuned.yaml holds learner options."""
    means: dict[tuple, list[float]] = {}
    for row in rows:
        if row[spec.metric] is not None and math.isfinite(row[spec.metric]):
            key = (row["label"], row["scenario"] or "fewshot", json.dumps(row["settings"]))
            means.setdefault(key, []).append(row[spec.metric])
    best: dict[str, dict[str, dict]] = {}
    sign = 1 if spec.mode == "max" else -1
    for (label, scenario, settings), values in sorted(means.items(),
                                                      key=lambda item: sign * sum(item[1]) / len(item[1])):
        best.setdefault(label, {})[scenario] = {
            key.removeprefix("learner.options."): value for key, value in json.loads(settings).items()}
    return best


def write_best(rows: list[dict[str, Any]], spec: SweepSpec, command: str) -> dict:
    """Merge the best settings into ``spec.best`` (others' entries stay), headed by the command
    and the validation metric they were chosen on."""
    best = yaml.safe_load(spec.best.read_text()) if spec.best.is_file() else {}
    chosen = best_settings(rows, spec)
    for label, scenarios in chosen.items():
        best.setdefault(label, {}).update(scenarios)
    spec.best.parent.mkdir(parents=True, exist_ok=True)
    spec.best.write_text(f"# written by {command}\n# chosen on {spec.metric} ({spec.mode}), measured on "
                         "validation data held out of training, never on the test set\n"
                         + yaml.safe_dump(best))
    return chosen
