"""One run = one cell of an ablation (DESIGN.md): stage 1 -> latent cache -> stage 2 -> evaluation -> metrics.json."""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig

from ldm import cache as stage_cache
from ldm.callbacks import StepBudget, StepSeed
from ldm.data.latents import LatentDataModule
from ldm.errors import ConfigError, Diverged, UserError
from ldm.evaluation import evaluate
from ldm.utils.config import build, instantiate_dict, instantiate_module, plain
from ldm.utils.io import atomic_write, write_json

log = logging.getLogger(__name__)
STAGES = ("all", "stage1", "stage2")


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def eval_device(cfg: DictConfig) -> torch.device:
    """Where encoding, sampling and evaluation run: the GPU when the trainer may use one."""
    wants_gpu = str(cfg.trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


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


def _check_file(path: Optional[str], key: str, example: str) -> Optional[str]:
    if path and not Path(path).is_file():
        raise ConfigError(f"{key}={path} is not a file: pass a checkpoint such as {example}")
    return path


# ---- stage 1 ----------------------------------------------------------------------------------------------
DISPLAY_KEYS = ("num_vis", "vis_seed", "ckpt_path")


def _without(d: dict, keys) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def stage1_parts(cfg: DictConfig) -> dict:
    """What determines a trained autoencoder: data, autoencoder config, seed, budget, batch size, precision."""
    return {"data": _without(plain(cfg.data), ("num_workers", "eval_batch_size")),
            "autoencoder": _without(plain(cfg.autoencoder), DISPLAY_KEYS), "seed": cfg.seed,
            "max_steps": cfg.stage1.max_steps, "precision": str(cfg.trainer.get("precision"))}


def _entry(cfg: DictConfig, stage: str, parts: dict, trainer: Optional[L.Trainer] = None):
    """The cache entry for a stage, or None when caching is off, resuming, or running multi-process."""
    if not cfg.get("cache", {}).get(stage, False) or (trainer is not None and trainer.world_size > 1):
        return None
    return stage_cache.Entry(cfg.paths.cache_dir, stage, stage_cache.key(parts), parts)


def autoencoder(cfg: DictConfig, datamodule: Any, train: bool = True) -> tuple[Any, dict, bool, Optional[Any]]:
    """Stage 1: load `autoencoder.ckpt_path`, reuse a cached identical stage 1, or train (resuming from `ckpt_path`).

    Returns (autoencoder, stage1/* metrics, is_global_zero, cache entry or None). Autoencoders without
    parameters (identity) have nothing to train and are used as they are.
    """
    ae_cfg = plain(cfg.autoencoder)
    reuse = _check_file(ae_cfg.pop("ckpt_path", None), "autoencoder.ckpt_path", "<run>/checkpoints/stage1/last.ckpt")
    cls = hydra.utils.get_class(ae_cfg["_target_"])
    if reuse:
        ae = cls.load_from_checkpoint(reuse, map_location="cpu")
        steps = batches_in_checkpoint(torch.load(reuse, map_location="cpu", weights_only=True))
        info = {"stage1/reused": True, "stage1/steps": steps, "stage1/wall_s": 0.0, "stage1/checkpoint": reuse,
                "stage1/key": hashlib.sha256(Path(reuse).read_bytes()).hexdigest()[:20]}
        log.info("stage 1: loaded %s from %s", cls.__name__, reuse)
        return ae, {**info, **_ae_info(ae)}, True, None
    ae = instantiate_module(ae_cfg)
    ae.stage_name = "stage1"
    parts = stage1_parts(cfg)
    if count_params(ae) == 0:
        log.info("stage 1: %s has no parameters, nothing to train", type(ae).__name__)
        return ae, {"stage1/reused": False, "stage1/steps": 0, "stage1/wall_s": 0.0,
                    "stage1/key": stage_cache.key(parts), **_ae_info(ae)}, True, None
    if not train:
        raise ConfigError("stage=stage2 needs a trained autoencoder: set autoencoder.ckpt_path=<run>/checkpoints/"
                          "stage1/last.ckpt")
    budget = cfg.stage1
    trainer = make_trainer(cfg, "stage1", budget.max_steps, budget.val_every)
    ckpt = _check_file(cfg.get("ckpt_path"), "ckpt_path", "<run>/checkpoints/stage1/last.ckpt")
    entry = None if ckpt else _entry(cfg, "stage1", parts, trainer)
    with entry.locked() if entry else nullcontext():
        if entry is not None and entry.complete:
            ae = cls.load_from_checkpoint(entry.path("autoencoder.ckpt"), map_location="cpu", weights_only=True)
            log.info("stage 1: reusing %s from the cache (%s)", cls.__name__, entry.dir)
            return ae, {**entry.info(), "stage1/reused": True, "stage1/cache": str(entry.dir)}, True, entry
        t0 = time.perf_counter()
        trainer.fit(ae, datamodule=datamodule, ckpt_path=ckpt)
        wall = time.perf_counter() - t0
        val = trainer.callback_metrics.get("val/loss")
        info = {"stage1/reused": False, "stage1/wall_s": wall,
                "stage1/steps": trainer.fit_loop.epoch_loop.batch_progress.total.completed,
                "stage1/val_loss": float(val) if val is not None else None, "stage1/key": stage_cache.key(parts),
                **_ae_info(ae)}
        if entry is not None and trainer.is_global_zero:
            atomic_write(entry.path("autoencoder.ckpt"), lambda tmp: trainer.save_checkpoint(tmp, weights_only=True))
            entry.finish(info)
    return ae, info, trainer.is_global_zero, entry


def batches_in_checkpoint(ckpt: dict) -> Optional[int]:
    """Training batches a Lightning checkpoint had completed (global_step counts GAN optimizer steps twice)."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"])
    except (KeyError, TypeError):
        return ckpt.get("global_step")


def _ae_info(ae: Any) -> dict:
    return {"stage1/params": count_params(ae), "stage1/latent_shape": "x".join(map(str, ae.latent_shape)),
            "stage1/kind": type(ae).__name__}


# ---- latent cache -----------------------------------------------------------------------------------------
@torch.no_grad()
def encode_splits(ae: Any, datamodule: Any, device: torch.device, batch_size: int = 256) -> dict:
    """Encode every split once: posterior mean and std (None for deterministic encoders), labels, on CPU."""
    ae.to(device).eval()
    cache = {}
    for name in ("train", "val", "test"):
        images, labels = datamodule.split(name).tensors
        means, stds = [], []
        for i in range(0, len(images), batch_size):
            mean, std = ae.encode_distribution(images[i:i + batch_size].to(device))
            means.append(mean.float().cpu())
            if std is not None:
                stds.append(std.float().cpu())
        cache[name] = {"mean": torch.cat(means) if means else torch.empty(0, *ae.latent_shape),
                       "std": torch.cat(stds) if stds else None, "labels": labels.clone()}
    return cache


def save_cache(cache: dict, path: Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(cache, tmp))


# ---- stage 2 ----------------------------------------------------------------------------------------------
def diffusion(cfg: DictConfig, ae: Any, cache: dict, num_classes: int, stage1_key: str) -> tuple[Any, dict, bool]:
    """Stage 2: latent diffusion on the cached training latents (resuming from `stage2.ckpt_path`), or a cached
    identical stage 2 (same autoencoder, diffusion config, budget and seed; the sampler does not matter)."""
    from ldm.diffusion.module import LatentDiffusion

    budget = cfg.stage2
    ld = instantiate_module(cfg.diffusion, latent_shape=list(ae.latent_shape), num_classes=num_classes,
                            sampler=plain(cfg.sampler))
    ld.fit_scaling(cache["train"]["mean"], cache["train"]["std"])
    ld.set_decoder(ae.decode)
    latents = LatentDataModule({k: cache[k] for k in ("train", "val")}, batch_size=budget.batch_size,
                               shuffle_seed=cfg.seed)
    trainer = make_trainer(cfg, "stage2", budget.max_steps, budget.val_every)
    ckpt = _check_file(budget.get("ckpt_path"), "stage2.ckpt_path", "<run>/checkpoints/stage2/last.ckpt")
    parts = {"stage1": stage1_key, "diffusion": _without(plain(cfg.diffusion), DISPLAY_KEYS), "seed": cfg.seed,
             "max_steps": budget.max_steps, "batch_size": budget.batch_size, "num_classes": num_classes,
             "precision": str(cfg.trainer.get("precision"))}
    entry = None if ckpt else _entry(cfg, "stage2", parts, trainer)
    with entry.locked() if entry else nullcontext():
        if entry is not None and entry.complete:
            ld = LatentDiffusion.load_from_checkpoint(entry.path("diffusion.ckpt"), map_location="cpu",
                                                      weights_only=True, sampler=plain(cfg.sampler))
            ld.set_decoder(ae.decode)
            log.info("stage 2: reusing the diffusion model from the cache (%s)", entry.dir)
            return ld, {**entry.info(), "stage2/reused": True, "stage2/cache": str(entry.dir)}, True
        t0 = time.perf_counter()
        trainer.fit(ld, datamodule=latents, ckpt_path=ckpt)
        wall = time.perf_counter() - t0
        val = trainer.callback_metrics.get("val/loss")
        info = {"stage2/steps": trainer.fit_loop.epoch_loop.batch_progress.total.completed, "stage2/wall_s": wall,
                "stage2/params": count_params(ld.net), "stage2/val_loss": float(val) if val is not None else None,
                "stage2/scale_factor": ld.scale_factor, "stage2/scaling": ld.hparams.scaling,
                "stage2/latent": ld.hparams.latent, "stage2/reused": False}
        if entry is not None and trainer.is_global_zero:
            atomic_write(entry.path("diffusion.ckpt"), lambda tmp: trainer.save_checkpoint(tmp, weights_only=True))
            entry.finish(info)
    return ld, info, trainer.is_global_zero


# ---- the run ----------------------------------------------------------------------------------------------
def train(cfg: DictConfig, metrics: Optional[dict] = None) -> Optional[dict]:
    """Run the configured stages, filling `metrics` as each finishes; returns it (None on non-zero DDP ranks)."""
    metrics = {} if metrics is None else metrics
    stage = cfg.get("stage", "all")
    if stage not in STAGES:
        raise ConfigError(f"stage={stage}: choose one of {', '.join(STAGES)}")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    datamodule = build(cfg.data)
    datamodule.setup()
    log.info("data: %s", datamodule)
    device = eval_device(cfg)
    ae, info, rank0, entry = autoencoder(cfg, datamodule, train=stage != "stage2")
    metrics.update(info)
    ld = None
    if stage != "stage1":
        if entry is not None and entry.path("latents.pt").is_file():
            cache = torch.load(entry.path("latents.pt"), map_location="cpu", weights_only=True)
        else:
            cache = encode_splits(ae, datamodule, device)
            if entry is not None and rank0:
                save_cache(cache, entry.path("latents.pt"))
        if rank0:
            save_cache(cache, run_dir / "latents.pt")
        ld, info, rank0 = diffusion(cfg, ae, cache, datamodule.num_classes, metrics["stage1/key"])
        metrics.update(info)
    if not rank0:
        return None
    t0 = time.perf_counter()
    metrics.update(evaluate(ae, ld, datamodule, cfg.metrics, cfg.data, cfg.paths.cache_dir, run_dir, device))
    metrics["eval/wall_s"] = time.perf_counter() - t0
    return metrics


def summarize(run_dir: Path, metrics: dict) -> str:
    lines = [f"run directory: {run_dir}"]
    for sub in sorted((run_dir / "checkpoints").glob("*")):
        lines.append(f"  checkpoints/{sub.name}: " + ", ".join(sorted(p.name for p in sub.glob("*.ckpt"))))
    pngs = sorted(p.name for p in run_dir.glob("*.png"))
    if pngs:
        lines.append("  figures: " + ", ".join(pngs))
    if (run_dir / "latents.pt").exists():
        lines.append(f"  latent cache: {run_dir / 'latents.pt'}")
    lines.append(f"  metrics: {run_dir / 'metrics.json'}")
    keys = ["status", "stage1/steps", "stage1/wall_s", "recon/psnr", "recon/rfid", "stage2/steps", "stage2/wall_s",
            "gen/fid", "eval/fid_floor", "gen/classes_covered", "gen/nfe", "gen/sec_per_sample", "eval/evaluator_acc"]
    shown = [f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
             for k in keys if k in metrics]
    lines.append("  " + "  ".join(shown))
    return "\n".join(lines)


def finish_wandb(metrics: dict, failed: bool) -> None:
    """Final metrics as a wandb.Table and run summary, then wandb.finish() (also after a failure)."""
    wandb = sys.modules.get("wandb")  # only if a WandbLogger imported it
    if wandb is None or wandb.run is None:
        return
    try:
        rows = [[k, v if isinstance(v, (int, float)) else str(v)] for k, v in sorted(metrics.items())]
        wandb.log({"final/metrics": wandb.Table(columns=["metric", "value"], data=[[k, str(v)] for k, v in rows])})
        wandb.run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
    finally:
        wandb.finish(exit_code=1 if failed else 0)


def one_line(err: BaseException) -> str:
    msg = " ".join(str(err).split()) or type(err).__name__
    return msg if isinstance(err, (UserError, Diverged)) else f"{type(err).__name__}: {msg}"


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


def main(cfg: DictConfig) -> Optional[float]:
    """Entry point behind train.py: runs, writes metrics.json atomically, reports, maps errors to exit codes.

    User errors print one line to stderr and exit 2; a diverged run is recorded and returns None;
    any other failure is recorded as `failed` and re-raised with its traceback. Inside a multirun a
    failing job is recorded and logged but does not stop the sweep (the other jobs' results stay).
    """
    if in_multirun():
        try:
            return _main(cfg)
        except (Exception, SystemExit) as e:  # recorded in this job's metrics.json already
            log.exception("job failed (%s); the sweep goes on", one_line(e))
            return None
    return _main(cfg)


def _main(cfg: DictConfig) -> Optional[float]:
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.json"
    metrics: dict = {}  # filled stage by stage, so a failure still records what finished
    failed = True
    try:
        if train(cfg, metrics) is None:
            failed = False
            return None
        metrics = {"status": "ok", **metrics}
        failed = False
    except UserError as e:
        metrics = {**metrics, "status": "failed", "error": one_line(e)}
        write_json(metrics_path, metrics)
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except Diverged as e:
        metrics = {**metrics, "status": "diverged", "error": one_line(e)}
        log.error("run diverged: %s", one_line(e))
    except Exception as e:
        metrics = {**metrics, "status": "failed", "error": one_line(e)}
        write_json(metrics_path, metrics)
        raise
    finally:
        finish_wandb(metrics, failed)
    write_json(metrics_path, metrics)
    log.info("\n%s", summarize(run_dir, metrics))
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None
