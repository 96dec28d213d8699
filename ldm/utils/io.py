"""Atomic file writes: a reader never sees a half-written file under the final name."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # read once: os.umask can only be read by setting it


def file_mode() -> int:
    """The mode a new file gets under this process's umask (0644 under umask 022), as open() would give it."""
    return 0o666 & ~UMASK


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` on a temp file beside `path`, then rename it over `path`. The file ends with the
    mode the umask gives (mkstemp makes 0600, which would hide results from a group sharing the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # torch / numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


def write_json(path: str | os.PathLike, obj: dict) -> Path:
    """Write a flat JSON object atomically (NaN becomes null, so the file stays valid JSON)."""
    clean = {k: _jsonable(v) for k, v in obj.items()}

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(clean, f, indent=2, sort_keys=True)
            f.write("\n")

    return atomic_write(path, write)


def read_json(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)
