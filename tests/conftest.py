"""Shared fixtures: the real data root (CI points METALEARN_DATA at ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _real_data_root() -> Path | None:
    configured = os.environ.get("METALEARN_DATA", "").split(os.pathsep)[0]
    for candidate in (configured, REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "omniglot-py").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding the real archives; in CI its absence is a failure, not a skip."""
    root = _real_data_root()
    if root is None:
        message = "real data not found: set METALEARN_DATA to a folder with omniglot-py/ and MNIST/"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder for this test only, so decoding really runs."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("METALEARN_CACHE", str(cache))
    return cache


def tiny_split_mnist(tmp_path, data_root, **changes):
    """A Split MNIST run that trains for seconds: 3 tasks would be too few digits, so 5 tasks
    of 2 digits with a small MLP and few steps."""
    config = {
        "benchmark": {"name": "split_mnist"},
        "learner": {"name": "finetune", "options": {"lr": 0.001}},
        "model": {"name": "mlp", "options": {"hidden": [64]}},
        "protocol": {"steps_per_task": 20, "batch_size": 64, "eval_batch_size": 2048},
        "scenario": "class",
        "seed": 0,
        "device": "cpu",
        "data_root": str(data_root),
        "output_dir": str(tmp_path / "runs"),
        "wandb": {"mode": "disabled"},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            config[section][name] = value
        else:
            config[key] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def tiny_config(tmp_path, data_root):
    return lambda **changes: tiny_split_mnist(tmp_path, data_root, **changes)
