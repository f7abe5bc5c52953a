"""Reads the records of an offline wandb run (its ``.wandb`` file) back, for the tests.

The file is a 7-byte header followed by a LevelDB-style log: 32 KiB blocks of chunks, each
with a 7-byte header (checksum, little-endian length, type: 1 full, 2 first, 3 middle, 4 last)
and a piece of a serialised ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7


def read_records(path: Path) -> list:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb log"
    records, pieces, position = [], [], HEADER
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if length == 0 and kind == 0:  # padding to the end of the block
            position += left
            continue
        pieces.append(data[position + HEADER : position + HEADER + length])
        position += HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            records.append(record)
            pieces = []
    return records


def logged(run_dir: Path) -> dict:
    """History rows, summary values, config and metric definitions of the run in ``run_dir``."""
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    history, summary, config, metrics, run = [], {}, {}, {}, None
    for record in read_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                            for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
        elif kind == "run":
            run = record.run
            for item in record.run.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "metric":
            metrics[record.metric.name or record.metric.glob_name] = record.metric.step_metric
    return {"history": history, "summary": summary, "config": config, "metrics": metrics, "run": run}
