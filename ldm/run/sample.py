"""sample.py's logic: N samples of a trained model as PNGs (+ one .npz and a grid), deterministic for a seed."""

from __future__ import annotations

import io
import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig

from ldm.errors import ConfigError
from ldm.run import schema
from ldm.run.loading import Model, device_for, load
from ldm.run.task import run_task
from ldm.utils.config import build, get_class, plain
from ldm.utils.images import make_grid, save_png, to_uint8

log = logging.getLogger(__name__)


def configure(model: Model, cfg: DictConfig) -> None:
    """The sampler, its steps and the guidance scale asked for on the command line (`Model.sampler_for`)."""
    ld = model.diffusion
    ld.sampler = model.sampler_for(cfg.sampler if cfg.get("sampler") else None, cfg.get("steps"))
    ld.noise_on_device = cfg.get("sampler_noise") == "device"
    if cfg.get("guidance_scale") is not None:
        ld.hparams.guidance_scale = float(cfg.guidance_scale)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez with fixed zip timestamps, so the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.save(buf, array, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def write(images: torch.Tensor, label: Optional[int], out: Path, overwrite: bool) -> Path:
    """PNGs 000000.png ..., samples.npz and grid.png into a temporary folder, then renamed to `out`."""
    if out.exists() and not overwrite:
        raise ConfigError(f"out_dir={out} exists: choose another folder or pass overwrite=true")
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:  # a full disk or a signal half-way: the temporary folder goes, nothing is left under any name
        pixels = to_uint8(images)
        for i, image in enumerate(pixels):
            save_png(image, tmp / f"{i:06d}.png")
        labels = np.full(len(pixels), -1 if label is None else label, dtype=np.int64)
        save_npz(tmp / "samples.npz", images=pixels, labels=labels)
        save_png(make_grid(images[:64], nrow=8, scale=max(1, 48 // images.shape[-1])), tmp / "grid.png")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def class_agreement(model: Model, images: torch.Tensor, label: int, cache_dir: str,
                    device: torch.device) -> Optional[float]:
    """The share of `images` the run's evaluator assigns to class `label` (None when the run's metrics use no
    evaluator); loaded from the cache, or trained once as evaluation would."""
    from ldm.metrics.evaluator import EvaluatorFeatures
    from ldm.run.evaluation import upgrade_metrics

    features = (upgrade_metrics(plain(model.config.get("metrics")) or {}) or {}).get("features")
    if not features or not issubclass(get_class(features["_target_"], "metrics.features._target_"),
                                      EvaluatorFeatures):
        return None
    data = build(model.config.data)
    data.setup()
    evaluator = build(features)(data, plain(model.config.data), cache_dir, device)
    return evaluator.accuracy_on(images, torch.full((len(images),), label))


def sample(cfg: DictConfig, report=None) -> dict:
    if not cfg.run_dir:
        raise ConfigError("pass run_dir=<train.py run directory or export>")
    schema.validate(cfg, schema.SAMPLE)
    model = load(cfg.run_dir, cfg.checkpoint)
    if model.diffusion is None:
        raise ConfigError(f"run_dir={cfg.run_dir} has no stage-2 model to sample (it ran stage=stage1)")
    configure(model, cfg)
    label = model.class_index(cfg.get("class"))
    device = device_for(cfg.device)
    images = model.sample(int(cfg.num_samples), int(cfg.seed), int(cfg.batch_size), label, device, show=True)
    out = write(images, label, Path(cfg.out_dir), bool(cfg.overwrite))
    log.info("wrote %d samples to %s (PNGs, samples.npz, grid.png)", len(images), out)
    result = {"num_samples": len(images), "out_dir": str(out)}
    if label is not None and cfg.check_class:
        share = class_agreement(model, images, label, cfg.paths.cache_dir, device)
        if share is not None:
            names = model.names()
            name = names[label] if label < len(names) else str(label)
            log.info("the run's evaluator calls %d of %d samples class %s (%.1f%%; chance %.1f%%)",
                     round(share * len(images)), len(images), name, 100 * share, 100 / model.diffusion.num_classes)
            result["class_agreement"] = share
    return result


def main(cfg: DictConfig) -> Optional[dict]:
    """Entry point behind sample.py, under the task wrapper (one `error:` line and exit 2 on bad input)."""
    return run_task(cfg, sample)
