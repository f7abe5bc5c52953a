"""benchmarks/memory_growth.py's check, short: MAML meta-training with a tiny Conv4 keeps its
memory flat over 100 iterations, and the same check flags a learner that keeps each step's loss
with its graph, so the detector itself is tested."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from metalearn.tasks import EpisodeBatch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

DEVICE = torch.device("cpu")
ITERATIONS, WARMUP, EVERY = 100, 20, 20
HIDDEN, META_BATCH = 4, 2
# Flat runs here (8 runs, vmap and loop, 1 thread) moved the resident set after malloc_trim by
# -0.02 to +0.09 MiB over the 80 measured iterations; the leak below adds 1.1 MiB a step (87 MiB).
# 4 MiB is 40 times the first and a twentieth of the second
TOLERANCE_MIB = 4.0


@pytest.fixture
def memory_growth(monkeypatch):
    """The benchmark's module, run with one thread (the tiny model gains nothing from two)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import memory_growth

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield memory_growth
    torch.set_num_threads(threads)


def growth(memory_growth, learner):
    report = memory_growth.measure_growth(memory_growth.training(learner, META_BATCH, DEVICE), DEVICE,
                                          ITERATIONS, WARMUP, EVERY)
    return report, memory_growth.growth_problems(report, TOLERANCE_MIB)


def test_meta_training_keeps_memory_flat(memory_growth):
    report, problems = growth(memory_growth, memory_growth.build_learner("maml-vmap", HIDDEN, 1, DEVICE))
    assert problems == [], report["growth"]
    assert [r["iteration"] for r in report["readings"]] == [20, 40, 60, 80, 100]
    assert len({r["live_tensors"] for r in report["readings"]}) == 1
    assert report["peak_above_start_mib"] > 0  # the step's graph comes and goes


def test_a_learner_that_keeps_each_steps_graph_is_flagged(memory_growth):
    learner = memory_growth.build_learner("maml-vmap", HIDDEN, 1, DEVICE)
    kept = []
    train_step = learner.train_step

    def leaky_step(batch: EpisodeBatch) -> dict[str, torch.Tensor]:
        """The step, and a query loss whose graph (its activations) is kept from step to step."""
        values = train_step(batch)
        kept.append(F.cross_entropy(learner.model(batch.query_x[0]), batch.query_y[0]))
        return values

    learner.train_step = leaky_step
    report, problems = growth(memory_growth, learner)
    assert len(kept) == ITERATIONS
    assert report["growth"]["live_tensors"]["end_minus_start"] >= ITERATIONS - WARMUP  # its graph holds more
    assert report["memory_growth_mib"]["fitted"] > TOLERANCE_MIB
    assert any("more live tensors" in problem for problem in problems)
    assert any("memory grew" in problem for problem in problems)
