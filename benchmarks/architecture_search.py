"""Architecture search on Omniglot 5-way 1-shot (issue 23, docs/architecture_search.md).

Reads the four searches' ``search.json`` (``metalearn sweep
benchmarks/sweeps/architecture_search/<searcher>.yaml``), draws each searcher's best validation
score against the candidate-trainings spent, then retrains the best architecture of each, and
Conv4, with ``benchmarks/nas/retrain.yaml`` (one grid sweep, 3 seeds) and tests each once on
the 600 test episodes. Writes ``results.json``, ``summary.md``, ``search_progress.png`` and
each search's ``search.json`` to ``--out``.

    for s in random evolution reinforce darts; do
        METALEARN_DATA=DATA metalearn sweep benchmarks/sweeps/architecture_search/$s.yaml; done
    METALEARN_DATA=DATA python benchmarks/architecture_search.py

Both steps resume: finished runs are reused by their config's fingerprint.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

import yaml

from metalearn.models import build_model
from metalearn.nas import CONV4, ArchitectureSpace, as_blocks, from_blocks
from metalearn.sweep.command import sweep
from metalearn.tracking import load_results
from metalearn.tracking.plots import search_progress_figure

SEARCHERS = ("random", "evolution", "reinforce", "darts")
CANDIDATE = Path("benchmarks/nas/candidate.yaml")
RETRAIN = Path("benchmarks/nas/retrain.yaml")


def describe(blocks: list[dict]) -> str:
    """``conv3x3-64-stride · sep5x5-32-max``: one block per item."""
    return " · ".join(f"{b['op']}-{b['width']}-{b['reduce']}" for b in blocks)


def progress(search: dict, start: float = 0.0) -> list[tuple[float, float]]:
    """(candidate-trainings spent, best validation score so far) after each candidate, counted
    from ``start`` (DARTS: its supernet's training, in candidate-trainings of the same time)."""
    return [(start + c["candidate"], c["best_so_far"]) for c in search["candidates"]
            if c["best_so_far"] is not None]


def grid_sweep(folder: Path, name: str, config: Path, blocks: list[list[dict]], seeds: list[int],
               overrides: list[str]) -> dict[str, list[dict]]:
    """Run ``config`` at each architecture and seed as one grid sweep (the engine reuses what
    has finished); the rows of each architecture, by its description."""
    spec = folder / f"{name}_spec.yaml"
    spec.write_text(yaml.safe_dump({
        "configs": [str(config)], "overrides": ["wandb.mode=disabled", *overrides],
        "grid": {"model.options.blocks": blocks}, "seeds": seeds,
        "output_dir": f"runs/architecture_search/{name}"}, sort_keys=False))
    if sweep(spec) != 0:
        raise SystemExit(f"error: a run of {spec} failed: see runs/architecture_search/{name}/summary.md")
    rows = json.loads(Path(f"runs/architecture_search/{name}/summary.json").read_text())["trials"]
    by_architecture: dict[str, list[dict]] = {}
    for row in rows:
        by_architecture.setdefault(describe(row["settings"]["model.options.blocks"]), []).append(row)
    return by_architecture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=Path, default=Path("runs/architecture_search"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/architecture_search"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    space = ArchitectureSpace()
    searches = {}
    for name in SEARCHERS:
        path = args.searches / name / "search.json"
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing: run metalearn sweep "
                             f"benchmarks/sweeps/architecture_search/{name}.yaml first")
        searches[name] = json.loads(path.read_text())
        (args.out / f"{name}_search.json").write_text(path.read_text())
    winners = {name: max((c for c in s["candidates"] if c["val_acc"] is not None), key=lambda c: c["val_acc"])
               for name, s in searches.items()}
    architectures = [as_blocks(CONV4)] + [w["blocks"] for w in winners.values()]
    unique = list({describe(blocks): blocks for blocks in architectures}.values())
    # Conv4 as a candidate (same budget, validation only): the line the searches must clear
    conv4_candidate = grid_sweep(args.out, "conv4_candidate", CANDIDATE, [as_blocks(CONV4)], [0],
                                 ["protocol.test=false"])
    retrained = grid_sweep(args.out, "retrain", RETRAIN, unique, args.seeds, [])

    rows = []
    for name, blocks, search_score in [("Conv4", as_blocks(CONV4), None)] + [
            (name, w["blocks"], w["val_acc"]) for name, w in winners.items()]:
        runs = [load_results(row["run_dir"]) for row in retrained[describe(blocks)]]
        accuracies = [100 * r.metrics["acc"] for r in runs]
        model = build_model("searchable", space.image_shape, space.n_way, blocks=blocks)
        rows.append({
            "searcher": name, "architecture": describe(blocks), "blocks": blocks,
            "mflops": space.flops(from_blocks(blocks)) / 1e6,
            "parameters": sum(p.numel() for p in model.parameters()),
            "search_val_acc": search_score, "test_acc": statistics.mean(accuracies),
            "test_acc_se": statistics.stdev(accuracies) / len(accuracies) ** 0.5 if len(accuracies) > 1 else None,
            "test_ci95": statistics.mean(100 * r.metrics["acc_ci95"] for r in runs),
            "seeds": [r.seed for r in runs], "test_acc_per_seed": accuracies,
            "train_s": statistics.mean(r.timings["train_s/task_0"] for r in runs)})
    conv4_val = load_results(conv4_candidate[describe(as_blocks(CONV4))][0]["run_dir"]).metrics["val_acc"]
    # DARTS's supernet costs what training candidates for as long would: a supernet step runs
    # every operation at every reduction, so its steps are no measure of its cost
    candidate_s = statistics.median(load_results(c["run_dir"]).timings["train_s/task_0"]
                                    for name, search in searches.items() if name != "darts"
                                    for c in search["candidates"] if c["status"] in ("ran", "reused"))
    supernet_s = load_results(searches["darts"]["supernet"]["run_dir"]).timings["train_s/task_0"]
    figure = search_progress_figure(
        {name: progress(s, supernet_s / candidate_s if name == "darts" else 0.0)
         for name, s in searches.items()}, {"Conv4 as a candidate": conv4_val},
        "Omniglot 5-way 1-shot, ProtoNet: the best validation accuracy of each search\n"
        f"(FLOPs capped at Conv4's {space.flops_limit() / 1e6:.2f} M; DARTS after its supernet)")
    figure.savefig(args.out / "search_progress.png", dpi=120)
    command = "python " + shlex.join(["benchmarks/architecture_search.py", *(argv or sys.argv[1:])])
    (args.out / "results.json").write_text(json.dumps({
        "command": command, "conv4_candidate_val_acc": conv4_val, "rows": rows,
        "median_candidate_train_s": candidate_s, "supernet_train_s": supernet_s,
        "supernet_candidate_trainings": supernet_s / candidate_s,
        "candidates": {name: len(s["candidates"]) for name, s in searches.items()}}, indent=2) + "\n")
    conv4 = rows[0]["test_acc"]
    lines = [f"`{command}`", "",
             "| searcher | architecture (op-width-reduction per block) | MFLOPs | parameters | best val (search) | test 5-way 1-shot (mean ± s.e., 3 seeds) | mean 95% CI | vs Conv4 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        search = "-" if row["search_val_acc"] is None else f"{100 * row['search_val_acc']:.2f}"
        se = "" if row["test_acc_se"] is None else f" ± {row['test_acc_se']:.2f}"
        lines.append(f"| {row['searcher']} | {row['architecture']} | {row['mflops']:.2f} | {row['parameters']:,} | "
                     f"{search} | {row['test_acc']:.2f}{se} | ± {row['test_ci95']:.2f} | {row['test_acc'] - conv4:+.2f} |")
    lines += ["", f"Conv4 trained as a candidate: {100 * conv4_val:.2f} validation accuracy. DARTS's "
              f"supernet trained for {supernet_s:.0f} s, {supernet_s / candidate_s:.1f} times the median "
              f"candidate's {candidate_s:.0f} s (the same machine and load)."]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
