"""Finding, downloading and caching dataset archives, with errors that say what to do.

Integrity is checked two ways. A download is checked against the canonical MD5 of the
official release. A local archive is checked by its container's own checksums (gzip and zip
store a CRC-32 of every member) plus the dataset's expected structure, so re-packed copies of
the same pixels (a Debian package, a re-zipped mirror) are accepted and corrupt ones are not.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from metalearn.data.roots import CACHE_ENV, DATA_ENV, cache_dir, download_dir
from metalearn.files import atomic_torch_save

# A stalled server is dropped after DOWNLOAD_TIMEOUT_S without a byte (connecting, or any
# read), and each URL is tried DOWNLOAD_ATTEMPTS times, RETRY_BACKOFF_S apart, doubling.
DOWNLOAD_TIMEOUT_S = 20.0
DOWNLOAD_ATTEMPTS = 3
RETRY_BACKOFF_S = 1.0
USER_AGENT = "metalearn"


class DataError(RuntimeError):
    """A dataset could not be loaded; the message names the file and the fix."""


class MissingDataError(DataError, FileNotFoundError):
    """A dataset file is in none of the data roots and could not be downloaded."""


class CorruptDataError(DataError):
    """A dataset file exists but fails its checksum or structure check."""


@dataclass(frozen=True)
class Resource:
    """One file of a dataset: its path under a data root and where to download it."""

    relative_path: str
    urls: tuple[str, ...] = ()
    md5: str | None = None

    @property
    def name(self) -> str:
        return Path(self.relative_path).name


def locate(resource: Resource, roots: Sequence[Path], download: bool = True) -> Path:
    """Return the first existing copy of ``resource`` in ``roots``, downloading it if allowed."""
    for root in roots:
        candidate = root / resource.relative_path
        if candidate.is_file():
            return candidate
    attempts: list[str] = []
    if download and resource.urls:
        target = download_dir() / resource.relative_path
        for url in resource.urls:
            if _download_with_retries(url, target, resource.md5, attempts):
                return target
    searched = "\n".join(f"  {root / resource.relative_path}" for root in roots)
    tried = "\n".join(f"  {a}" for a in attempts) if attempts else "  (download disabled)"
    network = "; or check the network connection and run again" if attempts else ""
    raise MissingDataError(
        f"{resource.name} was not found. Looked in:\n{searched}\nDownload attempts:\n{tried}\n"
        f"Fix: copy {resource.name} to <root>/{resource.relative_path} and pass --data-root "
        f"<root> or set {DATA_ENV}=<root>{network}."
    )


def _download_with_retries(url: str, target: Path, md5: str | None, attempts: list[str]) -> bool:
    """Try ``url`` up to DOWNLOAD_ATTEMPTS times, warning before each retry; append each
    failure to ``attempts``. Errors that a retry cannot cure (an HTTP 4xx answer, a file whose
    MD5 is wrong) end the tries at once."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            _download(url, target, md5)
            return True
        except (OSError, http.client.HTTPException, CorruptDataError) as error:
            attempts.append(f"{url} (attempt {attempt} of {DOWNLOAD_ATTEMPTS}): {_reason(error)}")
            incurable = isinstance(error, CorruptDataError) or (
                isinstance(error, urllib.error.HTTPError) and error.code < 500)
            if incurable or attempt == DOWNLOAD_ATTEMPTS:
                break
            wait = RETRY_BACKOFF_S * 2 ** (attempt - 1)
            warnings.warn(f"downloading {target.name} from {url} failed ({_reason(error)}); "
                          f"trying again in {wait:g} s (attempt {attempt + 1} of "
                          f"{DOWNLOAD_ATTEMPTS})", stacklevel=3)
            time.sleep(wait)
    return False


def _reason(error: Exception) -> str:
    """Why a download failed, in words: urllib wraps a connect timeout in a URLError."""
    cause = getattr(error, "reason", None) if isinstance(error, urllib.error.URLError) else None
    if isinstance(error, TimeoutError) or isinstance(cause, TimeoutError):
        return f"no answer within {DOWNLOAD_TIMEOUT_S:g} s"
    return str(error)


def _download(url: str, target: Path, md5: str | None) -> None:
    """Fetch ``url`` into ``target`` through a scratch folder beside it, so that a failure of
    any kind (timeout, dropped connection, MD5 mismatch, Ctrl-C) leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as scratch:
        fetched = Path(scratch) / target.name
        # The timeout bounds the connection and every read: a stalled server is dropped.
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                open(fetched, "wb") as handle:
            expected = response.length  # Content-Length, if the server sent one
            shutil.copyfileobj(response, handle)
        received = fetched.stat().st_size
        if expected is not None and received != expected:  # urllib does not check this
            raise ConnectionError(f"connection closed after {received} of {expected} bytes")
        if md5 is not None and file_md5(fetched) != md5:
            raise CorruptDataError(f"downloaded {target.name} does not match MD5 {md5}")
        os.replace(fetched, target)


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corrupt(path: Path, problem: str) -> CorruptDataError:
    """The error for a file that is present but unreadable, with the fix spelled out."""
    return CorruptDataError(
        f"{path} failed its integrity check ({problem}). The file is corrupt or truncated: "
        f"replace it with a fresh copy of {path.name}."
    )


def source_key(paths: Sequence[Path]) -> str:
    """A short key that changes whenever a source file is replaced (size and mtime)."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load_cached(name: str, sources: Sequence[Path], build: Any) -> dict[str, Any]:
    """Load ``name`` from the cache if it was built from these sources, else build and store it.

    ``build()`` returns a dict of tensors and plain Python values. The cache file is written
    atomically, so an interrupted run never leaves a half-written cache behind.
    """
    path = cache_dir() / "decoded" / f"{name}-{source_key(sources)}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, never fatal
            path.unlink(missing_ok=True)
    content = build()
    try:
        atomic_torch_save(content, path)
    except OSError as error:
        warnings.warn(
            f"could not write the decoded-data cache at {path} ({error}); set {CACHE_ENV} to a "
            "writable folder to make the next load fast.",
            stacklevel=2,
        )
    return content
