"""Shared fixtures: the real data root (CI points METALEARN_DATA at ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
