"""A search against the grid it replaces on one tuning problem: the best validation score each
reached, the setting it chose, and the best so far after each run, in the order the runs ended.

Reads the output folders of two finished sweeps (their summary.json and run folders) and writes
into ``--out``: each sweep's summary (``<name>_summary.json``, ``.md``), ``best_so_far.json``
and ``best_so_far.png``. benchmarks/results/sweep_search_vs_grid/NOTES.md has the commands.

    python benchmarks/sweep_search_vs_grid.py grid=runs/sweeps/split_mnist_si_domain_grid \\
        search=runs/sweeps/split_mnist_si_domain --out benchmarks/results/sweep_search_vs_grid
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from matplotlib.figure import Figure

from metalearn.tracking.run_folder import RESULTS_FILE


def best_so_far(folder: Path) -> dict:
    """The sweep's finished trials in the order their runs ended, with the best metric so far."""
    summary = json.loads((folder / "summary.json").read_text())
    metric, sign = summary["metric"], 1 if summary["mode"] == "max" else -1
    finished = [row for row in summary["trials"] if row[metric] is not None]
    finished.sort(key=lambda row: (Path(row["run_dir"]) / RESULTS_FILE).stat().st_mtime)
    order, best = [], None
    for row in finished:
        if best is None or sign * row[metric] > sign * best[metric]:
            best = row
        order.append({"settings": row["settings"], metric: row[metric], "best_so_far": best[metric]})
    return {"command": summary["command"], "metric": metric, "runs": len(summary["trials"]),
            "finished": len(finished), "best": best[metric], "chosen": best["settings"], "order": order}


def figure(sweeps: dict[str, dict]) -> Figure:
    fig = Figure(figsize=(5.5, 3.5), layout="constrained")
    axes = fig.add_subplot()
    for name, sweep in sweeps.items():
        metric = sweep["metric"]
        runs = range(1, len(sweep["order"]) + 1)
        axes.step(runs, [point["best_so_far"] for point in sweep["order"]], where="post",
                  label=f"{name}: best {sweep['best']:.4f} after {sweep['runs']} runs")
        axes.plot(runs, [point[metric] for point in sweep["order"]], ".", color=axes.lines[-1].get_color(),
                  alpha=0.5)
    axes.set(xlabel="runs finished", ylabel=f"{metric} (dots: each run; line: best so far)")
    axes.legend(loc="lower right", fontsize="small")
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", metavar="NAME=FOLDER", help="a sweep's output folder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    named = dict(argument.partition("=")[::2] for argument in args.sweeps)
    if not all(named.values()):
        parser.error("give each sweep as NAME=FOLDER, e.g. grid=runs/sweeps/split_mnist_si_domain_grid")
    args.out.mkdir(parents=True, exist_ok=True)
    sweeps = {}
    for name, folder in named.items():
        sweeps[name] = best_so_far(Path(folder))
        for suffix in ("json", "md"):
            shutil.copyfile(Path(folder) / f"summary.{suffix}", args.out / f"{name}_summary.{suffix}")
        print(f"{name}: best {sweeps[name]['metric']} {sweeps[name]['best']:.4f} at "
              f"{sweeps[name]['chosen']} after {sweeps[name]['runs']} runs")
    (args.out / "best_so_far.json").write_text(json.dumps(sweeps, indent=1) + "\n")
    figure(sweeps).savefig(args.out / "best_so_far.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
