"""Downloads against local servers that misbehave: stalls, dropped connections, a late answer."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path
from typing import Sequence

import pytest

from metalearn.data import MissingDataError, archives
from metalearn.data.archives import Resource, locate

BODY = b"the archive's bytes"


class LocalServer:
    """A TCP server on 127.0.0.1 that counts connections and answers the n-th with
    ``answers[n]`` (bytes sent after reading the request; then it stalls, holding the socket
    open, if ``stall``), or stays silent past the end of ``answers``."""

    def __init__(self, answers: Sequence[bytes] = (), stall: bool = True) -> None:
        self.answers, self.stall = list(answers), stall
        self.connections: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # the listener was closed
                return
            self.connections.append(connection)
            if len(self.connections) <= len(self.answers):
                connection.recv(65536)  # the request
                connection.sendall(self.answers[len(self.connections) - 1])
                if not self.stall:
                    connection.close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def fast_retries(monkeypatch):
    """Timeouts and waits short enough for a test; the attempts are counted as in real use."""
    monkeypatch.setattr(archives, "DOWNLOAD_TIMEOUT_S", 0.3)
    monkeypatch.setattr(archives, "DOWNLOAD_ATTEMPTS", 3)
    monkeypatch.setattr(archives, "RETRY_BACKOFF_S", 0.05)


def serve(request, **options) -> LocalServer:
    server = LocalServer(**options)
    request.addfinalizer(server.close)
    return server


def leftovers(cache: Path) -> list[Path]:
    """Everything in the cache but the folders a download goes into."""
    return [p for p in cache.rglob("*") if not p.is_dir() or p.name.startswith(".download")]


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nthe first bytes"],
    ids=["silent", "stalls-mid-file"],
)
def test_a_stalled_download_times_out_retries_and_leaves_nothing(
        request, fresh_cache, tmp_path, fast_retries, answer):
    """Once this hung for minutes and left a temporary folder in the cache."""
    server = serve(request, answers=[answer] * 3 if answer else [])
    resource = Resource("MNIST/raw/t10k-labels-idx1-ubyte.gz", (server.url("t10k-labels"),))
    start = time.monotonic()
    with pytest.raises(MissingDataError) as raised, pytest.warns(UserWarning) as warned:
        locate(resource, [tmp_path / "root"])
    elapsed = time.monotonic() - start
    assert [str(w.message) for w in warned] == [
        f"downloading t10k-labels-idx1-ubyte.gz from {server.url('t10k-labels')} failed (no "
        f"answer within 0.3 s); trying again in {wait} s (attempt {attempt} of 3)"
        for wait, attempt in ((0.05, 2), (0.1, 3))]
    assert len(server.connections) == 3
    assert elapsed < 3 * 0.3 + 0.05 + 0.1 + 2  # three timeouts and two waits, with slack
    message = str(raised.value)
    assert message.count(f"{server.url('t10k-labels')} (attempt") == 3
    assert "(attempt 3 of 3): no answer within 0.3 s" in message
    assert message.endswith(
        "Fix: copy t10k-labels-idx1-ubyte.gz to <root>/MNIST/raw/t10k-labels-idx1-ubyte.gz and "
        "pass --data-root <root> or set METALEARN_DATA=<root>; or check the network connection "
        "and run again.")
    assert leftovers(fresh_cache) == []


def test_retries_after_dropped_connections_complete_the_download(
        request, fresh_cache, tmp_path, fast_retries):
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    server = serve(request, answers=[answer + BODY[:5], answer + BODY[:9], answer + BODY],
                   stall=False)
    resource = Resource("MNIST/raw/train-labels-idx1-ubyte.gz", (server.url("train-labels"),),
                        hashlib.md5(BODY).hexdigest())
    with pytest.warns(UserWarning) as warned:
        path = locate(resource, [tmp_path / "root"])
    assert ["connection closed after 5 of 19 bytes" in str(w.message) for w in warned] == [True, False]
    assert path == fresh_cache / "data" / resource.relative_path and path.read_bytes() == BODY
    assert len(server.connections) == 3
    assert leftovers(fresh_cache) == [path]


def test_a_missing_file_on_the_server_is_not_retried(request, fresh_cache, tmp_path, fast_retries):
    server = serve(request, answers=[b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"],
                   stall=False)
    resource = Resource("MNIST/raw/t10k-images-idx3-ubyte.gz", (server.url("t10k-images"),))
    with pytest.raises(MissingDataError, match=r"\(attempt 1 of 3\): HTTP Error 404: Not Found\n"):
        locate(resource, [tmp_path / "root"])
    assert len(server.connections) == 1
    assert leftovers(fresh_cache) == []
