"""Checkpoints: plain dicts of tensors and values, written atomically, loaded without pickle."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from metalearn.files import atomic_torch_save


class CheckpointError(ValueError):
    """A checkpoint cannot be read; the message names the file and what to do."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that a crash mid-write leaves the previous checkpoint intact."""
    atomic_torch_save(state, path)


def load_checkpoint(path: Path, map_location: torch.device | str | None = None,
                    holds: tuple[str, ...] = ("learner", "results", "rng")) -> dict[str, Any]:
    """Load with ``weights_only=True``: only tensors and plain containers, never objects;
    ``map_location`` moves the tensors (a run trained on a GPU, tested on a CPU). ``holds``:
    the keys it must have (a run's checkpoint: the learner, results and random state)."""
    try:
        state = torch.load(path, weights_only=True, map_location=map_location)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path} cannot be read ({reason}): it is missing, truncated or corrupt. "
            f"Nothing in {path.parent} was changed; restore the file from a copy, or start the "
            "run again in a new folder") from None
    if not isinstance(state, dict) or not set(holds) <= state.keys():
        raise CheckpointError(f"{path} is not a metalearn checkpoint (it lacks one of "
                              f"{', '.join(holds)}); give the folder of a metalearn run")
    return state
