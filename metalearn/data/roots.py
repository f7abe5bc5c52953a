"""Where datasets are read from and where derived files are written.

Data roots are searched in order: an explicit root (the ``--data-root`` flag), then the
``METALEARN_DATA`` environment variable (one folder, or several joined with ``os.pathsep``),
then the per-user cache's ``data`` folder. Data roots are treated as read-only: downloads and
decoded tensors only ever go to the cache folder (``METALEARN_CACHE``, else the per-user cache).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DATA_ENV = "METALEARN_DATA"
CACHE_ENV = "METALEARN_CACHE"


def cache_dir() -> Path:
    """The writable folder for downloads and decoded tensors."""
    configured = os.environ.get(CACHE_ENV)
    path = Path(configured) if configured else Path(platformdirs.user_cache_dir("metalearn"))
    return path.expanduser()


def download_dir() -> Path:
    """The data root that downloads land in (inside the cache, never a user's data root)."""
    return cache_dir() / "data"


def data_roots(explicit: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for dataset files, in order of precedence."""
    if explicit is not None:
        configured = [Path(explicit)]
    else:
        configured = [Path(p) for p in os.environ.get(DATA_ENV, "").split(os.pathsep) if p]
    roots = [p.expanduser() for p in configured]
    return roots + [download_dir()]
