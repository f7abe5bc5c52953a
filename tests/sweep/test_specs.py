"""The sweep specs that ship are valid: every trial's config builds, and searches validate."""

from pathlib import Path

import pytest

from metalearn.sweep import load_spec, trials

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "benchmarks" / "sweeps").glob("*/*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_shipped_sweep_spec_loads(path, monkeypatch):
    monkeypatch.chdir(REPO)  # specs name configs relative to the repository
    assert trials(load_spec(path))
