"""Export a trained model as one directory that loads without its run (`ldm.run.loading.load` reads it back).

The layout (`autoencoder.safetensors`, `diffusion.safetensors`, `model.json`) is described in `ldm.run.loading`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from ldm.errors import ConfigError
from ldm.run.loading import EXPORT, FORMAT, Model
from ldm.utils.checkpoint import qualname
from ldm.utils.config import plain


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export(model: Model, out_dir: str | os.PathLike, source: str = "") -> Path:
    """Write `model` as one directory (temporary folder, renamed into place: never half-written)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists():
        raise ConfigError(f"export={out} exists: choose a new folder or remove it")
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        meta = {"format": FORMAT, "source": source, "config": OmegaConf.to_container(model.config, resolve=True),
                "class_names": list(model.class_names)}
        for name, module in (("autoencoder", model.autoencoder), ("diffusion", model.diffusion)):
            if module is None:
                continue
            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp / f"{name}.safetensors"))
            os.chmod(tmp / f"{name}.safetensors", 0o666 & ~umask())  # safetensors writes 0600: readable as any file
            meta[name] = {"class": qualname(type(module)), "hparams": plain(dict(module.hparams))}
        (tmp / EXPORT).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
