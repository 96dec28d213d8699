"""One run = one cell of an ablation: stage 1 (autoencoder) -> evaluation -> metrics.json (DESIGN.md contract)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from ldm.callbacks import StepBudget, StepSeed
from ldm.errors import ConfigError, Diverged, UserError
from ldm.metrics.reconstruction import reconstruct_all, reconstruction_metrics
from ldm.utils.config import build, instantiate_dict, instantiate_module
from ldm.utils.io import write_json

log = logging.getLogger(__name__)


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_trainer(cfg: DictConfig, stage: str, max_steps: int, val_every: int) -> L.Trainer:
    """A Trainer for one stage: its budget, checkpoints under checkpoints/<stage>/, loggers prefixed by stage."""
    if val_every < 1:
        raise ConfigError(f"{stage}.val_every={val_every} must be >= 1")
    callbacks = instantiate_dict(cfg.get("callbacks"))
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint):
            cb.dirpath = str(Path(cfg.paths.output_dir) / "checkpoints" / stage)
    callbacks += [StepBudget(max_steps), StepSeed(cfg.seed)]
    loggers = [build(v, prefix=stage) for v in (cfg.get("logger") or {}).values() if v and "_target_" in v]
    if not loggers:  # nothing to report learning rates to (logger=none)
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    return build(cfg.trainer, callbacks=callbacks, logger=loggers or False, max_steps=-1, max_epochs=-1,
                 val_check_interval=min(val_every, max_steps), check_val_every_n_epoch=None)


def fit_autoencoder(cfg: DictConfig, datamodule: L.LightningDataModule) -> tuple[Any, dict, L.Trainer]:
    """Stage 1: train the configured autoencoder for `stage1.max_steps` batches (resuming from `ckpt_path`)."""
    budget = cfg.stage1
    ae = instantiate_module(cfg.autoencoder)
    ae.stage_name = "stage1"
    trainer = make_trainer(cfg, "stage1", budget.max_steps, budget.val_every)
    ckpt = cfg.get("ckpt_path")
    if ckpt and not Path(ckpt).is_file():
        raise ConfigError(f"ckpt_path={ckpt} is not a file: pass a checkpoint such as <run>/checkpoints/stage1/last.ckpt")
    t0 = time.perf_counter()
    trainer.fit(ae, datamodule=datamodule, ckpt_path=ckpt)
    wall = time.perf_counter() - t0
    val = trainer.callback_metrics.get("val/loss")
    info = {"stage1/steps": trainer.fit_loop.epoch_loop.batch_progress.total.completed, "stage1/wall_s": wall,
            "stage1/params": count_params(ae), "stage1/reused": False,
            "stage1/val_loss": float(val) if val is not None else None,
            "stage1/latent_shape": "x".join(map(str, ae.latent_shape))}
    return ae, info, trainer


def evaluate_reconstruction(ae: Any, datamodule: Any, device: torch.device) -> dict:
    """recon/* on the test split with the deterministic encoder (posterior mean)."""
    test = datamodule.split("test")
    if len(test) == 0:
        return {}
    ae.to(device).eval()
    x = test.images
    x_hat = reconstruct_all(ae.reconstruct, x, device=device)
    return {f"recon/{k}": v for k, v in reconstruction_metrics(x_hat, x).items()}


def train(cfg: DictConfig) -> Optional[dict]:
    """Run every configured stage; returns the metrics (None on non-zero DDP ranks)."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data)
    datamodule.setup()
    log.info("data: %s", datamodule)
    ae, metrics, trainer = fit_autoencoder(cfg, datamodule)
    if not trainer.is_global_zero:
        return None
    metrics.update(evaluate_reconstruction(ae, datamodule, trainer.strategy.root_device))
    return metrics


def summarize(run_dir: Path, metrics: dict) -> str:
    lines = [f"run directory: {run_dir}"]
    for sub in sorted((run_dir / "checkpoints").glob("*")):
        lines.append(f"  checkpoints/{sub.name}: " + ", ".join(sorted(p.name for p in sub.glob("*.ckpt"))))
    pngs = sorted(p.name for p in run_dir.glob("*.png"))
    if pngs:
        lines.append("  figures: " + ", ".join(pngs))
    lines.append(f"  metrics: {run_dir / 'metrics.json'}")
    keys = [k for k in ("status", "stage1/steps", "stage1/wall_s", "recon/psnr", "recon/ssim") if k in metrics]
    lines.append("  " + "  ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                                  for k in keys))
    return "\n".join(lines)


def one_line(err: BaseException) -> str:
    msg = " ".join(str(err).split()) or type(err).__name__
    return msg if isinstance(err, (UserError, Diverged)) else f"{type(err).__name__}: {msg}"


def main(cfg: DictConfig) -> Optional[float]:
    """Entry point behind train.py: runs, writes metrics.json atomically, reports, maps errors to exit codes.

    User errors print one line to stderr and exit 2; a diverged run is recorded and returns None;
    any other failure is recorded as `failed` and re-raised with its traceback.
    """
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.json"
    metrics: dict = {}
    try:
        result = train(cfg)
        if result is None:
            return None
        metrics = {"status": "ok", **result}
    except UserError as e:
        write_json(metrics_path, {"status": "failed", "error": one_line(e)})
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except Diverged as e:
        metrics = {"status": "diverged", "error": one_line(e)}
        log.error("run diverged: %s", one_line(e))
    except Exception as e:
        write_json(metrics_path, {"status": "failed", "error": one_line(e)})
        raise
    write_json(metrics_path, metrics)
    log.info("\n%s", summarize(run_dir, metrics))
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None
