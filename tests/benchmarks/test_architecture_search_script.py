"""benchmarks/architecture_search.py: each search's progress in candidate-trainings spent (DARTS
after its supernet's cost) and the architectures' descriptions."""

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import architecture_search

    return architecture_search


def test_progress_counts_candidates_and_starts_darts_after_its_supernet(script):
    candidates = [{"candidate": 1, "best_so_far": None}, {"candidate": 2, "best_so_far": 0.7},
                  {"candidate": 3, "best_so_far": 0.8}]
    assert script.progress({"candidates": candidates}) == [(2, 0.7), (3, 0.8)]  # a failed first
    darts = {"candidates": [{"candidate": 1, "best_so_far": 0.9}]}
    assert script.progress(darts, start=7.1) == [(8.1, 0.9)]  # after its supernet's cost


def test_an_architecture_is_described_block_by_block(script):
    blocks = [{"op": "sep3x3", "width": 32, "reduce": "max"}, {"op": "skip", "width": 64, "reduce": "none"}]
    assert script.describe(blocks) == "sep3x3-32-max · skip-64-none"
