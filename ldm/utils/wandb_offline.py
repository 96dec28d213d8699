"""Read back what offline wandb runs recorded (their `run-*.wandb` files: LevelDB-log framed protobuf records),
so a sweep logged with WANDB_MODE=offline can be listed and filtered before (or without) `wandb sync`:

    python -m ldm.utils.wandb_offline logs/train/multiruns/<time> autoencoder=vae seed=1

A filter `key=value` matches a config group choice (`autoencoder=vae`, `data=digits`) or a top-level config
value (`seed=1`); the table lists each matching run's name, group, row, seed and final PSNR / FID.
"""

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
    """run -> {display_name, group, tags, config (top-level key -> value), summary (last value per key),
    history keys}."""
    import json

    out = {"config": {}, "summary": {}, "history": set()}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(name=r.run.display_name, group=r.run.run_group, tags=list(r.run.tags))
            out["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update})  # wandb.init's
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "summary":
            for u in r.summary.update:
                out["summary"][u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
        elif kind == "history":
            out["history"] |= {i.key or "/".join(i.nested_key) for i in r.history.item}
    return out


def runs(root: Path) -> list[tuple[Path, dict]]:
    """(run file, summary) of every offline wandb run under `root`, in path order."""
    return [(path, summary(path)) for path in sorted(Path(root).rglob("offline-run-*/run-*.wandb"))]


def matches(s: dict, filters: dict[str, str]) -> bool:
    config, chosen = s["config"], s["config"].get("choices") or {}
    return all(str(chosen.get(k, config.get(k))) == v for k, v in filters.items())


def main(argv: list[str]) -> int:
    import sys

    if not argv or not Path(argv[0]).is_dir() or any("=" not in a for a in argv[1:]):
        print("error: usage: python -m ldm.utils.wandb_offline <sweep or run directory> [key=value ...] "
              "(e.g. autoencoder=vae seed=1)", file=sys.stderr)
        return 2
    filters = dict(a.split("=", 1) for a in argv[1:])
    every = runs(Path(argv[0]))
    found = [(p, s) for p, s in every if matches(s, filters)]
    print("| name | group | autoencoder | seed | recon/psnr | gen/fid | status |\n|---|---|---|---|---|---|---|")
    for _, s in found:
        m, c = s["summary"], s["config"]

        def num(key):
            return f"{m[key]:.3f}" if isinstance(m.get(key), (int, float)) else "-"
        print(f"| {s.get('name', '')} | {s.get('group', '')} | {(c.get('choices') or {}).get('autoencoder', '-')} | "
              f"{c.get('seed', '-')} | {num('recon/psnr')} | {num('gen/fid')} | {m.get('status', '-')} |")
    print(f"{len(found)} of {len(every)} runs match")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
