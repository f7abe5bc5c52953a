"""Compare finished runs with published numbers: the reporting half of a comparison.

The runs come from ``metalearn sweep`` (docs/sweeps.md) or from hand-started ``metalearn
run``s; this script only reads their folders. The summary (mean and standard error over seeds
of ACC, BWT, FWT and forgetting, ACC beside the published value, for few-shot runs the 95%
confidence interval over test episodes, the validation accuracy where runs validated, and the
best grid point per learner and scenario by that validation accuracy) is printed and written to
``<out>/summary.json`` and ``<out>/summary.md``; where runs report their model size after
each task, ``<out>/accuracy_vs_model_size.png`` draws accuracy against it. The summary itself is
``metalearn.sweep.summary``'s, which ``metalearn reproduce``'s report shares.

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

import yaml
from rich.console import Console

from metalearn.results import RunResults
from metalearn.sweep.summary import MODEL_SIZE, best_options, load_finished, summarize, table
from metalearn.tracking.plots import accuracy_against_size_figure

SIZE_FIGURE = "accuracy_vs_model_size.png"

__all__ = ["best_options", "read_runs", "summarize", "table"]


def read_runs(arguments: list[str]) -> list[tuple[RunResults, str, dict]]:
    """The finished runs behind ``arguments`` (sweep summaries, run folders or results files
    kept on their own, ``LABEL=FOLDER`` to name a run's row), each with its row label and grid
    point; a failed or unfinished run is left out with a note."""
    runs = []
    for argument in arguments:
        label, _, folder = argument.rpartition("=")
        path = Path(folder)
        sweep = json.loads(path.read_text()) if path.is_file() else {}
        if "trials" in sweep:
            entries = [t for t in sweep["trials"] if t["status"] != "failed"]
        else:
            entries = [{"run_dir": folder, "label": label or None, "settings": {}}]
        for entry in entries:
            result = load_finished(entry["run_dir"])
            if result is not None:
                runs.append((result, entry["label"] or result.learner, entry["settings"]))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="sweep summaries (summary.json of metalearn "
                        "sweep), run folders or results files, or LABEL=FOLDER (default label: "
                        "the learner)")
    parser.add_argument("--published", type=Path, help="YAML: learner -> scenario -> ACC (%%)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", help="the figures' title (default: the output folder)")
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
        Console(file=handle, width=200).print(f"`{command}`\n", table(rows))
    if any(row[MODEL_SIZE] for row in rows):
        accuracy_against_size_figure(rows, args.title or str(args.out)).savefig(args.out / SIZE_FIGURE, dpi=110)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
