"""MAML, Meta-SGD, meta-LSTM (its summed meta-gradient clipped) and Reptile (fresh inner
state) over two processes (gloo, started by torchrun): three training steps give the
parameters, optimizer state and logged values of one process, in float64 to 1e-12, each
process adapting to its own share of the episodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distributed_steps import META_BATCH, STEPS, train

STEPS_SCRIPT = Path(__file__).with_name("distributed_steps.py")


def torchrun(*args: str, processes: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node processes ARGS`` (torch's own launcher)."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={processes}", *args],
        capture_output=True, text=True, timeout=timeout)


def steps_of_two_processes(name: str, tmp_path: Path) -> dict:
    """What rank 0 of ``distributed_steps.py`` NAME over two processes saved."""
    out = tmp_path / "state.pt"
    finished = torchrun(str(STEPS_SCRIPT), name, str(out))
    assert finished.returncode == 0, finished.stderr[-3000:]
    two = torch.load(out, weights_only=True)
    assert two["world_size"] == 2
    return two


def assert_close(actual, expected, path=""):
    """Nested states equal to 1e-12 (tensors) or exactly (other values)."""
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype, path
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12, msg=path)
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys(), path
        for key in expected:
            assert_close(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=0, abs=1e-12), path
    else:
        assert actual == expected, path


@pytest.mark.parametrize("name", ["maml", "meta_sgd", "meta_lstm", "reptile"])
def test_two_processes_take_the_steps_of_one(name, tmp_path):
    two = steps_of_two_processes(name, tmp_path)
    state, logged, adapted = train(name)
    assert (adapted, two["adapted"]) == (META_BATCH * STEPS, 2 * STEPS), "rank 0 did not take its 2 of 5 episodes"
    assert_close(two["state"], state)
    for mine, theirs in zip(two["logged"], logged, strict=True):  # accuracies are float32
        assert mine == pytest.approx(theirs, rel=1e-6), "the logged loss or accuracy differs"
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=0, abs=1e-12)
