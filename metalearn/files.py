"""Writing files so that an interrupted run never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import torch


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextlib.contextmanager
def _atomic(path: Path, mode: str) -> Iterator[IO[Any]]:
    """A temporary file beside ``path``, renamed into place only if writing succeeded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, suffix=".tmp", delete=False) as handle:
        try:
            yield handle
        except BaseException:
            os.unlink(handle.name)
            raise
    os.chmod(handle.name, 0o666 & ~_umask())  # the permissions a plain open() would give
    os.replace(handle.name, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    with _atomic(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_write_text(path: Path, text: str) -> None:
    with _atomic(path, "w") as handle:
        handle.write(text)
