"""Checkpoints: plain dicts of tensors and values, written atomically, loaded without pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metalearn.files import atomic_torch_save


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that a crash mid-write leaves the previous checkpoint intact."""
    atomic_torch_save(state, path)


def load_checkpoint(path: Path, map_location: torch.device | str | None = None) -> dict[str, Any]:
    """Load with ``weights_only=True``: only tensors and plain containers, never objects;
    ``map_location`` moves the tensors (a run trained on a GPU, tested on a CPU)."""
    return torch.load(path, weights_only=True, map_location=map_location)
