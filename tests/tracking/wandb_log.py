"""Reads back what an offline wandb run wrote to its ``.wandb`` file, for the tests.

wandb 0.31 ships no Python reader for this file (its ``sdk/internal/datastore.py`` is gone; the
Go core reads it), so this decodes the framing here and the records with wandb's own protobuf
classes. The file is a 7-byte header (":W&B", magic 0xBEE1, version) and then a LevelDB-style
log: 32 KiB blocks of chunks, each with a 7-byte header (checksum, little-endian length, type:
1 full, 2 first, 3 middle, 4 last) before a piece of a serialised ``Record``.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, LAST = 1, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a wandb transaction log"
    records, pieces, position = [], [], HEADER
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # too little room for a chunk header: the block is padded
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if length == 0 and kind == 0:  # zero padding up to the end of the block
            position += left
            continue
        pieces.append(data[position + HEADER : position + HEADER + length])
        position += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            records.append(record)
            pieces = []
    return records


def _key(item: Any) -> str:
    return "/".join(item.nested_key) or item.key


def finished_records(log: Path, timeout: float = 10.0) -> list[wandb_internal_pb2.Record]:
    """The records once the exit record is written: ``run.finish()`` can return before
    wandb's core process has flushed the file."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(log)
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"{log} has no exit record after {timeout} s")
        time.sleep(0.05)


def logged(run_dir: Path) -> dict[str, Any]:
    """History rows, summary, config, metric step axes, the last run record and the exit code."""
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    found: dict[str, Any] = {"history": [], "summary": {}, "config": {}, "metrics": {},
                             "run": None, "exit_code": None, "folder": log.parent}
    for record in finished_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            found["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                found["summary"][_key(item)] = json.loads(item.value_json)
        elif kind == "run":  # published again when the run is renamed: keep the last
            found["run"] = record.run
            for item in record.run.config.update:
                found["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                found["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "metric":
            found["metrics"][record.metric.name or record.metric.glob_name] = record.metric.step_metric
        elif kind == "exit":
            found["exit_code"] = record.exit.exit_code
    return found
