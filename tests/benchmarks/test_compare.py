"""benchmarks/compare.py: grids, the summary over seeds, the best grid point, and resuming a
comparison (stored runs reused, a stored run of another config refused)."""

import argparse
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from metalearn.results import RunResults

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare", BENCHMARKS / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(learner: str, seed: int, acc: float, bwt: float = math.nan,
           scenario: str | None = "task") -> RunResults:
    results = RunResults.empty("split_mnist", learner, scenario, seed, ["a", "b"], [1, 1], False)
    results.metrics = {"acc": acc, "bwt": bwt, "fwt": 0.0, "forgetting": 0.0}
    results.timings = {"wall_s": 10.0 * (seed + 1)}
    return results


def test_grid_points_are_every_combination(compare):
    assert compare.grid_points(["a=1,2", "b=x"]) == [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]
    assert compare.grid_points([]) == [{}]


def test_the_summary_is_the_mean_and_standard_error_over_seeds_beside_the_published_value(compare):
    rows = compare.summarize([(result("ewc", 0, 0.5), "ewc", {}), (result("ewc", 1, 0.7), "ewc", {}),
                              (result("si", 0, 0.9), "si", {})], {"ewc": {"task": 58.0}})
    ewc, si = rows
    assert ewc["seeds"] == [0, 1]
    assert ewc["acc_mean"] == 60.0
    assert ewc["acc_sem"] == pytest.approx(10.0)  # std (ddof 1) 14.14 / sqrt(2)
    assert ewc["difference"] == 2.0 and ewc["published"] == 58.0
    assert ewc["wall_s_mean"] == 15.0
    assert math.isnan(ewc["bwt_mean"])
    assert si["acc_sem"] is None and si["difference"] is None  # one seed, nothing published
    assert ewc["acc_ci95_mean"] is None  # continual runs have no interval over test episodes


def test_few_shot_rows_carry_the_runs_confidence_interval(compare):
    runs = [result("maml", seed, 0.9, scenario=None) for seed in (0, 1)]
    runs[0].metrics["acc_ci95"], runs[1].metrics["acc_ci95"] = 0.002, 0.004
    (row,) = compare.summarize([(run, "maml", {}) for run in runs], {"maml": {"fewshot": 98.7}})
    assert row["acc_ci95_mean"] == pytest.approx(0.3)  # percent, mean over seeds
    assert row["published"] == 98.7  # a run without a scenario is looked up as few-shot
    header = [column.header for column in compare.table([row]).columns]
    assert header[header.index("ACC") + 1] == "95% CI of a run"


def test_the_best_grid_point_per_learner_and_scenario_has_the_highest_accuracy(compare):
    low, high = ({"learner.options.strength": "1e5"}, {"learner.options.strength": "1e6"})
    rows = compare.summarize([(result("ewc", 0, 0.8), "ewc", low), (result("ewc", 0, 0.9), "ewc", high)], {})
    assert compare.best_options(rows) == {"ewc": {"task": {"strength": 1e6}}}


@pytest.fixture
def arguments(tmp_path):
    config = tmp_path / "finetune.yaml"
    config.write_text("benchmark: {name: split_mnist}\nlearner: {name: finetune}\nscenario: task\n"
                      "model: {name: mlp, options: {hidden: [8]}}\nprotocol: {steps_per_task: 2}\n")
    return argparse.Namespace(configs=[config], scenarios=[], seeds=[0, 1], grid=[], overrides=[],
                              tuned=None, wandb="disabled", runs=str(tmp_path / "runs"),
                              out=tmp_path / "out")


def test_a_resumed_comparison_reuses_stored_runs_and_refuses_those_of_another_config(
        compare, arguments, monkeypatch):
    calls = []

    def fake_run(config, run_dir, resume):
        calls.append((config.seed, resume))
        run_dir.mkdir(parents=True)
        (run_dir / "accuracy_matrix.png").write_bytes(b"png")
        return result("finetune", config.seed, 0.5 + 0.1 * config.seed)

    monkeypatch.setattr(compare, "run", fake_run)
    first = compare.run_all(arguments)
    assert calls == [(0, False), (1, False)]
    assert sorted((arguments.out / "runs").iterdir()) == sorted(
        arguments.out / "runs" / f"finetune-task-seed{seed}.{ext}"
        for seed in (0, 1) for ext in ("json", "yaml", "png"))

    again = compare.run_all(arguments)
    assert len(calls) == 2  # nothing run again
    assert [r.metrics["acc"] for r, _, _ in again] == [r.metrics["acc"] for r, _, _ in first]
    assert np.array_equal(again[1][0].accuracy, first[1][0].accuracy, equal_nan=True)

    arguments.overrides = ["protocol.steps_per_task=3"]
    with pytest.raises(SystemExit, match="another config"):
        compare.run_all(arguments)
