"""Content-addressed cache of finished stages, shared by concurrent jobs (file lock + atomic publish).

A sweep over diffusion or sampler settings then trains each autoencoder once, and a sweep over
samplers trains each diffusion model once. Keys hash the config that determines a stage's result
and the source code of `ldm/`, so editing the code never serves a stale model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional

from filelock import FileLock

from ldm.utils.io import atomic_write, read_json, write_json

PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def code_hash() -> str:
    """sha256 over every source file of the ldm package (sorted by path)."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def key(parts: dict) -> str:
    """Stable hash of a JSON-able dict (plus the code hash)."""
    blob = json.dumps({"parts": parts, "code": code_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class Entry:
    """cache_dir/<kind>/<key>/: files of one finished stage; `info.json` is written last, marking it complete."""

    def __init__(self, cache_dir: str | Path, kind: str, key_: str, parts: Optional[dict] = None) -> None:
        self.dir = Path(cache_dir) / kind / key_
        self.parts = parts
        self.lock_path = Path(cache_dir) / kind / f"{key_}.lock"

    @contextmanager
    def locked(self) -> Iterator["Entry"]:
        """Hold the entry's lock: one job trains while the others wait, then find it complete."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path)):
            yield self

    @property
    def complete(self) -> bool:
        return (self.dir / "info.json").is_file()

    def path(self, name: str) -> Path:
        return self.dir / name

    def put_file(self, name: str, src: str | Path) -> Path:
        return atomic_write(self.dir / name, lambda tmp: shutil.copyfile(src, tmp))

    def finish(self, info: dict) -> None:
        if self.parts is not None:
            write_json(self.dir / "config.json", {"json": json.dumps(self.parts, sort_keys=True, default=str)})
        write_json(self.dir / "info.json", info)

    def info(self) -> dict[str, Any]:
        return read_json(self.dir / "info.json")
