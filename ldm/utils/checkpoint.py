"""Checkpoints read safely and checked against the config before use.

Every read is `torch.load(weights_only=True)` (explicit, so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn
it off); hyper-parameters pass the `_target_` allowlist before any class is built from them; a module is
built by its own class (stored in the checkpoint) and compared with what the config asks for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ldm.errors import ConfigError
from ldm.utils.config import MODEL_TARGETS, check_targets, get_class
from ldm.utils.io import atomic_write

CLASS_KEY = "ldm/class"  # written by on_save_checkpoint of every module: which class the weights belong to


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, but each file is written to a temporary name beside it and renamed
    into place: a full disk or a kill mid-write leaves the previous file (or none), never a torn one under the
    final name, and the temporary is removed on every exit path Python sees (SIGKILL may leave a `.tmp`, which
    no reader picks up)."""

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # a remote filesystem: its own semantics
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(Path(path), lambda tmp: TorchCheckpointIO.save_checkpoint(self, checkpoint, tmp, storage_options))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries an atomic write left in `folder` when its process was killed (SIGKILL, power loss:
    no Python code ran to remove them). Called when a stage starts, by the one run that owns the directory."""
    gone = []
    for tmp in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else []:
        tmp.unlink(missing_ok=True)
        gone.append(tmp)
    return gone


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def read(path: str | os.PathLike, key: str) -> dict:
    """A Lightning checkpoint as a dict of tensors and plain values; ConfigError naming `key` and the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={path} is not a file: pass a checkpoint such as <run>/checkpoints/stage1/last.ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle payload, not a torch file: all end here
        what = "holds objects a weights-only load refuses" if "weights_only" in str(e).lower() or \
            "Unsupported global" in str(e) else f"cannot be read ({type(e).__name__})"
        raise ConfigError(f"{key}={path} {what}: it is truncated, corrupt or not a checkpoint written by ldm; "
                          f"re-create it or point {key} at another file") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ConfigError(f"{key}={path} is not a Lightning checkpoint (no state_dict): point {key} at a .ckpt "
                          f"written by train.py")
    return ckpt


def state_mismatch(module: torch.nn.Module, state: dict) -> Optional[str]:
    """Why `state` does not load into `module` (missing / unexpected / differently shaped tensors), or None."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = [f"{len(v)} {name} (first: {v[0]})" for name, v in
             (("missing tensors", missing), ("unexpected tensors", unexpected), ("shape mismatches", shapes)) if v]
    return "; ".join(parts) or None


def run_checkpoint(run_dir: str | os.PathLike, stage: str) -> Path:
    """<run>/checkpoints/<stage>/last.ckpt: what evaluate.py and resume read, whichever way the stage was obtained."""
    return Path(run_dir) / "checkpoints" / stage / "last.ckpt"


def load_module(path: str | os.PathLike, key: str, expected: Optional[type] = None, **overrides: Any) -> Any:
    """Build the module a checkpoint holds from its (allowlisted) hyper-parameters and load its weights.

    `expected`: the class the caller needs (the checkpoint's own class must be it or a subclass);
    `overrides` replace hyper-parameters (e.g. the sampler of the current config).
    """
    return load_checkpoint(path, key, expected, **overrides)[0]


def load_checkpoint(path: str | os.PathLike, key: str, expected: Optional[type] = None,
                    **overrides: Any) -> tuple[Any, dict]:
    """`load_module`, also returning the checkpoint dict (loops, step counts)."""
    ckpt = read(path, key)
    where = f"{key}={path}"
    hparams = dict(ckpt.get("hyper_parameters") or {})
    check_targets(hparams, where, "hyper_parameters", allowed=MODEL_TARGETS)
    saved = ckpt.get(CLASS_KEY)
    cls = get_class(saved, CLASS_KEY, where) if saved else expected
    if cls is None:
        raise ConfigError(f"{where} does not say which class it holds: load it with the config it was trained with")
    if expected is not None and not issubclass(cls, expected):
        raise ConfigError(f"{where} holds a {cls.__name__}, but the config asks for a {expected.__name__}: pass a "
                          f"{expected.__name__} checkpoint, or choose the config row that trained this one")
    try:
        module = cls(**{**hparams, **overrides})
    except TypeError as e:
        raise ConfigError(f"{where}: its hyper-parameters do not fit {cls.__name__} ({e}): was it written by "
                          f"another version of ldm?") from None
    problem = state_mismatch(module, ckpt["state_dict"])
    if problem:
        raise ConfigError(f"{where}: its weights do not fit the {cls.__name__} its hyper-parameters describe "
                          f"({problem}): the file is corrupt or was edited")
    module.load_state_dict(ckpt["state_dict"])
    return module, ckpt


def describe(module: Any) -> str:
    """'VAE, latent 2x4x4, 1x16x16 images': what decides whether weights fit a config."""
    text = type(module).__name__
    shape = getattr(module, "latent_shape", None)
    if shape is not None:
        text += f", latent {'x'.join(map(str, shape))}"
    if hasattr(module, "in_channels") and hasattr(module, "image_size"):
        text += f", {module.in_channels}x{module.image_size}x{module.image_size} images"
    if getattr(module, "num_classes", None):
        text += f", {module.num_classes} classes"
    return text


def check_fits(loaded: Any, configured: Any, key: str, path: str | os.PathLike) -> None:
    """ConfigError showing both when a checkpoint's module differs from the configured one in class or shapes."""
    mismatch = state_mismatch(configured, loaded.state_dict()) if type(loaded) is type(configured) else None
    have, want = describe(loaded), describe(configured)
    advice = "pass a checkpoint trained with this config, or change the config to match the checkpoint"
    if type(loaded) is not type(configured) or have != want:
        raise ConfigError(f"{key}={path} holds a {have}, but the config asks for a {want}: {advice}")
    if mismatch:  # the same summary on both sides: name the tensors that differ instead
        raise ConfigError(f"{key}={path} holds a {have} as the config asks, but its tensors differ from the "
                          f"configured module's: {mismatch} (checkpoint vs config): {advice}")


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make `dst` hold `src`'s bytes: a hard link where the filesystem allows, else a copy; atomic either way."""
    import shutil

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp"
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst
