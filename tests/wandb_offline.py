"""Read an offline W&B run's record log (`run-<id>.wandb`): run config, group, logged keys.

The file is a LevelDB-style log (32 KiB blocks of records with a 7-byte header: crc32, length,
kind = full / first / middle / last) after a 7-byte ``:W&B`` file header; each record is a
``wandb.proto.wandb_internal_pb2.Record``. wandb ships no reader for it in this version.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32768


def _chunks(data: bytes) -> Iterator[bytes]:
    if data[:4] != b":W&B":
        raise ValueError("not a W&B record log")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """{"group": str, "config": {key: value}, "logged": {key: last value}} of one offline run folder."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = Path(run_dir).glob("run-*.wandb")
    out: dict[str, Any] = {"group": None, "config": {}, "logged": {}}
    for raw in _chunks(log.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["group"] = rec.run.run_group
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            for i in rec.history.item:
                key = i.key or "/".join(i.nested_key)
                if not key.startswith("_"):
                    out["logged"][key] = json.loads(i.value_json)
    return out
