"""Read back what an offline wandb run recorded (its `run-*.wandb` file: LevelDB-log framed protobuf records)."""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7  # LevelDB log blocks; wandb's file header (":W&B", magic, version) is 7 bytes too


def records(path: Path) -> list:
    """Every `wandb_internal_pb2.Record` in the file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, out, partial = path.read_bytes(), HEADER, [], b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:  # FULL
            out.append(chunk)
        elif kind == 2:  # FIRST
            partial = chunk
        elif kind == 3:  # MIDDLE
            partial += chunk
        else:  # LAST
            out.append(partial + chunk)
    parsed = []
    for chunk in out:
        record = pb.Record()
        record.ParseFromString(chunk)
        parsed.append(record)
    return parsed


def summary(path: Path) -> dict:
    """run -> {display_name, group, tags, config keys, summary (last value per key), history keys}."""
    import json

    out = {"config": set(), "summary": {}, "history": set()}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(name=r.run.display_name, group=r.run.run_group, tags=list(r.run.tags))
        elif kind == "config":
            out["config"] |= {u.key for u in r.config.update}
        elif kind == "summary":
            for u in r.summary.update:
                out["summary"][u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
        elif kind == "history":
            out["history"] |= {i.key or "/".join(i.nested_key) for i in r.history.item}
    return out
