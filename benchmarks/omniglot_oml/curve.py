"""OML's and ANML's meta-test curve: accuracy on held-out drawings against the number of classes
learned online, beside the published points.

Evaluates finished runs of ``metalearn run benchmarks/omniglot_oml/{oml,anml}.yaml`` at each
number of classes (``metalearn evaluate RUN protocol.n_way=N``, the results kept in each run's
``evaluations/`` and reused), then writes ``curve.png`` and ``curve.md`` to ``--out``.

    python benchmarks/omniglot_oml/curve.py --run oml=RUN_DIR --run anml=RUN_DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure

from metalearn.cli.runner import evaluate

WAYS = (10, 50, 100, 200, 600)
EPISODES = (15, 15, 15, 15, 5)  # 600-way streams are 9000 steps: fewer draws (3000 queries each)
# Meta-test test accuracy of the reference code as Numenta re-ran it (nupic.research,
# projects/meta_cl/experiments: oml_replicate.py "OML-repo results", anml_replicate.py
# "ANML-repo results"); 15 training and 5 held-out images per class, learned in one pass.
PUBLISHED = {
    "oml": {10: 0.91, 50: 0.82, 100: 0.76, 200: 0.69, 600: 0.55},
    "anml": {10: 0.84, 50: 0.84, 100: 0.81, 200: 0.77, 600: 0.64},
}
COLOURS = {"oml": "tab:blue", "anml": "tab:orange"}


def measure(run_dir: Path, ways: list[int], episodes: list[int]) -> dict[int, tuple[float, float]]:
    """(accuracy, 95% CI half-width) of the run's learner at each number of classes: an
    evaluation the run already holds with the same overrides, or a new one."""
    held = {tuple(e["overrides"]): e for e in (json.loads(path.read_text()) for path in
                                               (run_dir / "evaluations").glob("*.json"))}
    points = {}
    for n_way, count in zip(ways, episodes, strict=True):
        overrides = [f"protocol.n_way={n_way}", f"protocol.eval_episodes={count}",
                     f"protocol.eval_meta_batch_size={count}"]
        result = held.get(tuple(overrides)) or evaluate(run_dir, overrides)
        task = result["tasks"][0]
        points[n_way] = (task["accuracy"], task["ci95"])
    return points


def plot(curves: dict[str, dict[int, tuple[float, float]]], title: str) -> Figure:
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    for name, points in curves.items():
        colour = COLOURS.get(name)
        ways = sorted(points)
        axes.errorbar(ways, [points[n][0] for n in ways], [points[n][1] for n in ways],
                      marker="o", color=colour, capsize=3, label=f"{name.upper()} (ours)")
        if name in PUBLISHED:
            published = PUBLISHED[name]
            axes.plot(sorted(published), [published[n] for n in sorted(published)], marker="s",
                      linestyle="--", color=colour, label=f"{name.upper()} (published)")
    axes.set(xscale="log", xlabel="classes learned online (one pass, 15 images each)",
             ylabel="accuracy on held-out drawings", ylim=(0, 1), title=title)
    axes.set_xticks(WAYS, [str(n) for n in WAYS])
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return figure


def table(curves: dict[str, dict[int, tuple[float, float]]]) -> str:
    ways = sorted({n for points in curves.values() for n in points})
    lines = ["| learner | " + " | ".join(f"{n} classes" for n in ways) + " |",
             "|---|" + "---|" * len(ways)]
    for name, points in curves.items():
        ours = [f"{points[n][0]:.2f} ± {points[n][1]:.2f}" if n in points else "" for n in ways]
        lines.append(f"| {name.upper()} (ours) | " + " | ".join(ours) + " |")
        if name in PUBLISHED:
            lines.append(f"| {name.upper()} (published) | "
                         + " | ".join(f"{PUBLISHED[name].get(n, '')}" for n in ways) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR",
                        help="a finished run of a learner (oml or anml) and its name")
    parser.add_argument("--out", type=Path, required=True, help="the folder for curve.png/.md")
    parser.add_argument("--ways", type=int, nargs="+", default=list(WAYS),
                        help="numbers of classes to learn online (default: 10 50 100 200 600)")
    parser.add_argument("--episodes", type=int, nargs="+", default=list(EPISODES),
                        help="meta-test episodes (draws of classes) at each number of classes "
                             "(default: 15 15 15 15 5)")
    parser.add_argument("--title", default="Omniglot, Lake's evaluation characters")
    args = parser.parse_args()
    if len(args.episodes) != len(args.ways):
        parser.error(f"--episodes gives {len(args.episodes)} numbers for {len(args.ways)} --ways: "
                     "give one per number of classes")
    curves = {}
    for run in args.run:
        name, _, run_dir = run.partition("=")
        if not run_dir:
            parser.error(f"--run {run!r}: give NAME=RUN_DIR, e.g. oml=benchmarks/results/...")
        curves[name] = measure(Path(run_dir), args.ways, args.episodes)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.title).savefig(args.out / "curve.png", dpi=120)
    (args.out / "curve.md").write_text(table(curves))
    print(table(curves))


if __name__ == "__main__":
    main()
