"""Small, fast run configs on the real data."""

from __future__ import annotations

import pytest
import yaml


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
