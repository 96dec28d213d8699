"""Content-addressed cache of finished work (stages, latents, the evaluator), shared by concurrent jobs.

A sweep over diffusion or sampler settings then trains each autoencoder once, and a sweep over
samplers trains each diffusion model once. Keys hash the config that determines a result and the
source code that computes it, so editing the code never serves a stale model.

An entry `cache_dir/<kind>/<key>/` is written into a temporary folder and renamed into place in one
step, its `manifest.json` (every file's size and sha256, plus the entry's info) written last. It is
complete only when the manifest lists every file and each matches; that is checked on every use,
under the entry's file lock. A bad or partial entry is moved aside to `cache_dir/<kind>/.bad/`
(logged with both paths) and rebuilt; temporaries left by a killed writer are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar, Union

from filelock import FileLock

from ldm.utils.io import read_json, write_json

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parents[1]  # the ldm package: every source file of it counts
MANIFEST = "manifest.json"
Writer = Callable[[str], None]  # writes a file at the given (temporary) path
T = TypeVar("T")


@lru_cache(maxsize=None)
def code_hash(*parts: str) -> str:
    """sha256 over the source files of the ldm package (sorted by path); `parts` limits it to those
    sub-paths of the package (files or folders, e.g. "metrics/evaluator.py", "data")."""
    roots = [PACKAGE / p for p in parts] or [PACKAGE]
    files = sorted({f for r in roots for f in ([r] if r.is_file() else r.rglob("*.py"))})
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(PACKAGE)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def key(parts: dict, code: Optional[str] = None) -> str:
    """Stable hash of a JSON-able dict plus a code hash (default: the whole package's)."""
    blob = json.dumps({"parts": parts, "code": code or code_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Entry:
    """One cached result: files plus an info dict, published atomically, verified on every use."""

    def __init__(self, cache_dir: str | Path, kind: str, key_: str, parts: Optional[dict] = None) -> None:
        self.root = Path(cache_dir) / kind
        self.key = key_
        self.dir = self.root / key_
        self.parts = parts
        self.lock_path = self.root / f"{key_}.lock"
        self._manifest: Optional[dict] = None

    @contextmanager
    def locked(self) -> Iterator["Entry"]:
        """Hold the entry's lock: one job builds while the others wait, then find it complete."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path)):
            self._clean_temporaries()
            yield self

    def path(self, name: str) -> Path:
        return self.dir / name

    def problem(self) -> Optional[str]:
        """Why the entry is not usable ("missing" when absent), or None when every file matches its manifest."""
        if not self.dir.exists():
            return "missing"
        try:
            manifest = read_json(self.dir / MANIFEST)
            files = manifest["files"]
        except FileNotFoundError:
            return f"no {MANIFEST} (a writer stopped before finishing)"
        except (ValueError, KeyError, TypeError) as e:
            return f"unreadable {MANIFEST} ({type(e).__name__})"
        for name, meta in files.items():
            path = self.dir / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != meta["size"]:
                return f"{name} has {path.stat().st_size} bytes, the manifest says {meta['size']}"
            if sha256(path) != meta["sha256"]:
                return f"{name} does not match its sha256"
        self._manifest = manifest
        return None

    def usable(self) -> bool:
        """True when complete and intact (call under `locked()`); a damaged entry is moved aside and logged."""
        problem = self.problem()
        if problem is None:
            return True
        if problem != "missing":
            self.quarantine(problem)
        return False

    def load(self, name: str, loader: Callable[[Path], T]) -> Optional[T]:
        """`loader(path of name)` when the entry is intact and its file loads; else None (a damaged entry, or one
        whose file does not load, e.g. a refused pickle, is moved aside). Call under `locked()`."""
        if not self.usable():
            return None
        try:
            return loader(self.path(name))
        except Exception as e:  # ConfigError from a safe loader, UnpicklingError, ...
            self.quarantine(f"{name} does not load: {type(e).__name__}")
            return None

    def quarantine(self, reason: str) -> Path:
        bad = self.root / ".bad" / f"{self.key}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}"
        bad.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.dir, bad)
        log.warning("cache: %s is damaged (%s); moved it to %s and rebuilding", self.dir, reason, bad)
        return bad

    def publish(self, files: dict[str, Union[Writer, str, Path]], info: dict) -> None:
        """Write `files` (a writer callable or a source path each) and the manifest, then rename into place."""
        tmp = self.root / f".{self.key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            manifest: dict[str, Any] = {"files": {}, "info": info, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            for name, source in files.items():
                target = tmp / name
                if callable(source):
                    source(str(target))
                else:
                    shutil.copyfile(source, target)
                manifest["files"][name] = {"size": target.stat().st_size, "sha256": sha256(target)}
            if self.parts is not None:
                manifest["parts"] = self.parts
            write_json(tmp / MANIFEST, manifest)
            if self.dir.exists():  # only reachable without the lock; never replace what another writer published
                shutil.rmtree(tmp)
                return
            os.replace(tmp, self.dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._manifest = manifest

    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            self._manifest = read_json(self.dir / MANIFEST)
        return self._manifest

    def info(self) -> dict[str, Any]:
        """The info dict published with the entry (e.g. the stage's steps and wall time when it was trained)."""
        return dict(self.manifest().get("info", {}))

    def sha256(self, name: str) -> str:
        """The checksum the manifest holds for one file: names the exact bytes, e.g. to key what derives from them."""
        return self.manifest()["files"][name]["sha256"]

    def _clean_temporaries(self) -> None:
        """Remove this key's temporaries: holding the lock, no live writer can own them."""
        for stray in self.root.glob(f".{self.key}.*.tmp"):
            log.warning("cache: removing %s, left by a writer that did not finish", stray)
            shutil.rmtree(stray, ignore_errors=True)
