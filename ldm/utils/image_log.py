"""Write an image grid to the run directory and to every image-capable logger."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from ldm.utils.images import auto_scale, label, make_grid, save_png


def log_grid(trainer, key: str, images: torch.Tensor, nrow: int | None = None, rows: Sequence[str] = (),
             cols: Sequence[str] = (), title: str = "") -> Path | None:
    """Save `<run_dir>/<key>.png` (latest) and `<run_dir>/images/<key>/step<N>.png`; send to wandb/tensorboard.

    Only global rank 0 writes. Returns the latest PNG's path.
    """
    if trainer is None or not trainer.is_global_zero:
        return None
    scale = auto_scale(images.shape[-1])
    grid = make_grid(images, nrow=nrow, scale=scale)
    if rows or cols or title:
        grid = label(grid, images.shape[-1] * scale, rows=rows, cols=cols, title=title)
    run_dir = Path(trainer.default_root_dir)
    step = trainer.global_step
    save_png(grid, run_dir / "images" / key / f"step{step:07d}.png")
    latest = save_png(grid, run_dir / f"{key}.png")
    for logger in trainer.loggers:
        write = IMAGE_WRITERS.get(type(logger))
        if write is not None:
            write(logger, key, grid, step)
    return latest


def _wandb(logger, key: str, grid, step: int) -> None:
    logger.log_image(key=key, images=[grid], step=step)


def _tensorboard(logger, key: str, grid, step: int) -> None:
    logger.experiment.add_image(key, grid, step, dataformats="HWC")


# how each logger class takes an image (loggers not listed, e.g. CSVLogger, take none); a new logger: one entry
IMAGE_WRITERS = {WandbLogger: _wandb, TensorBoardLogger: _tensorboard}
