"""One run = one cell of an ablation: preflight -> stage 1 -> latents -> stage 2 -> evaluation -> metrics.json.

Each stage is trained, continued from a checkpoint, or taken from the cache (`ldm.run.stages.run_stage`);
whichever way, the run directory ends up holding its own `checkpoints/<stage>/last.ckpt`, so
`evaluate.py run_dir=<run>` works on every finished run, also after `.cache` is deleted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import DictConfig

from ldm.data.base import batches
from ldm.data.latents import LatentDataModule
from ldm.run import preflight, runtime, tracking
from ldm.run.evaluation import evaluate
from ldm.run.stages import Result, Stage, run_stage
from ldm.run.task import process_rank, run_task
from ldm.rundir import summary
from ldm.utils import cache
from ldm.utils.checkpoint import link_or_copy, load_module, run_checkpoint
from ldm.utils.config import plain
from ldm.utils.config_tree import print_config_tree
from ldm.utils.io import atomic_write
from ldm.utils.progress import progress

log = logging.getLogger(__name__)
DISPLAY_KEYS = ("num_vis", "vis_seed", "ckpt_path")  # config keys that do not change a trained model


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _without(d: dict, keys) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


# ---- stage 1 ----------------------------------------------------------------------------------------------
def stage1_parts(cfg: DictConfig) -> dict:
    """What determines a trained autoencoder: data, autoencoder config, seed, budget, batch size, precision."""
    return {"data": _without(plain(cfg.data), ("num_workers",)),
            "autoencoder": _without(plain(cfg.autoencoder), DISPLAY_KEYS), "seed": cfg.seed,
            "max_steps": cfg.stage1.max_steps, "precision": str(cfg.trainer.get("precision")), **stopping(cfg.stage1)}


def stopping(budget: DictConfig) -> dict:
    """A plateau rule changes what a stage trains (where it stops, read at every val_every): part of its cache key.
    Absent for a fixed budget, so fixed-budget keys are what they were."""
    if not budget.get("plateau"):
        return {}
    return {"plateau": plain(budget.plateau), "val_every": int(budget.val_every)}


def ae_info(ae: Any) -> dict:
    return {"stage1/params": count_params(ae), "stage1/latent_shape": "x".join(map(str, ae.latent_shape)),
            "stage1/kind": type(ae).__name__}


def stage1(cfg: DictConfig, plan: preflight.Plan, loggers: list) -> Result:
    """The autoencoder: loaded from `autoencoder.ckpt_path`, nothing to train (identity), or `run_stage`."""
    ae = plan.autoencoder
    if plan.ae_checkpoint:  # loaded and checked against the config by preflight
        link_or_copy(plan.ae_checkpoint, run_checkpoint(cfg.paths.output_dir, "stage1"))
        digest = hashlib.sha256(Path(plan.ae_checkpoint).read_bytes()).hexdigest()[:20]
        log.info("stage 1: loaded %s from %s", type(ae).__name__, plan.ae_checkpoint)
        return Result(ae, {"stage1/reused": True, "stage1/source": "checkpoint", "stage1/wall_s": 0.0,
                           "stage1/steps": plan.ae_checkpoint_steps, "stage1/checkpoint": plan.ae_checkpoint,
                           "stage1/key": digest, **ae_info(ae)}, True, None)
    parts = stage1_parts(cfg)
    if count_params(ae) == 0:
        log.info("stage 1: %s has no parameters, nothing to train", type(ae).__name__)
        return Result(ae, {"stage1/reused": False, "stage1/source": "none", "stage1/steps": 0, "stage1/wall_s": 0.0,
                           "stage1/key": cache.key(parts), **ae_info(ae)}, True, None)
    ae.stage_name = "stage1"
    load = lambda path: load_module(path, "the cached stage 1", expected=type(ae))  # noqa: E731
    return run_stage(cfg, Stage("stage1", ae, plan.datamodule, "autoencoder.ckpt", load, parts, plan.resume1,
                                summary=ae_info), loggers)


# ---- latents ----------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_splits(ae: Any, datamodule: Any, device: torch.device, batch_size: int) -> dict:
    """Encode every split once: posterior mean and std (None for deterministic encoders), labels, on CPU."""
    ae.to(device).eval()
    latents = {}
    for name in ("train", "val", "test"):
        split = datamodule.split(name)
        means, stds = [], []
        chunks = progress(batches(split, batch_size), desc=f"encoding {name}", total=-(-len(split) // batch_size))
        for images, _ in chunks:
            mean, std = ae.encode_distribution(images.to(device))
            means.append(mean.float().cpu())
            if std is not None:
                stds.append(std.float().cpu())
        latents[name] = {"mean": torch.cat(means) if means else torch.empty(0, *ae.latent_shape),
                         "std": torch.cat(stds) if stds else None, "labels": split.labels.clone()}
    return latents


def latents(cfg: DictConfig, s1: Result, plan: preflight.Plan) -> dict:
    """Every split encoded once; cached beside a cached stage 1, keyed by that checkpoint's sha256 and the device."""
    entry = None
    if s1.entry is not None:
        digest = s1.entry.sha256("autoencoder.ckpt")
        entry = cache.Entry(cfg.paths.cache_dir, "latents", cache.key({"stage1": digest, "device": plan.device.type}))
    with entry.locked() if entry else nullcontext():
        out = entry.load("latents.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True)) \
            if entry is not None else None
        if out is not None:
            log.info("latents: from the cache (%s)", entry.dir)
        else:
            out = encode_splits(s1.module, plan.datamodule, plan.device, int(cfg.metrics.eval_batch))
            if entry is not None:
                entry.publish({"latents.pt": lambda tmp: torch.save(out, tmp)}, {"device": plan.device.type})
    if s1.rank0:
        atomic_write(Path(cfg.paths.output_dir) / "latents.pt", lambda tmp: torch.save(out, tmp))
    return out


# ---- stage 2 ----------------------------------------------------------------------------------------------
def ld_info(ld: Any) -> dict:
    return {"stage2/params": count_params(ld.net), "stage2/scale_factor": ld.scale_factor,
            "stage2/scaling": ld.hparams.scaling, "stage2/latent": ld.hparams.latent}


def stage2(cfg: DictConfig, plan: preflight.Plan, s1: Result, z: dict, loggers: list) -> Result:
    """Latent diffusion on the cached training latents: trained, continued from `stage2.ckpt_path`, or from the
    cache (same autoencoder, diffusion config, budget and seed; the sampler does not matter)."""
    from ldm.diffusion.module import LatentDiffusion

    ld, budget = plan.diffusion, cfg.stage2
    ld.fit_scaling(z["train"]["mean"], z["train"]["std"])
    ld.set_decoder(s1.module.decode, s1.module.latent_range)
    data = LatentDataModule({k: z[k] for k in ("train", "val")}, batch_size=budget.batch_size, shuffle_seed=cfg.seed,
                            overfit_batches=plan.datamodule.overfit_batches)
    parts = {"stage1": s1.info["stage1/key"], "diffusion": _without(plain(cfg.diffusion), DISPLAY_KEYS),
             "seed": cfg.seed, "max_steps": budget.max_steps, "batch_size": budget.batch_size,
             "num_classes": plan.datamodule.num_classes, "precision": str(cfg.trainer.get("precision")),
             **stopping(budget)}
    load = lambda path: load_module(path, "the cached stage 2", expected=LatentDiffusion,  # noqa: E731
                                    sampler=plain(cfg.sampler))
    result = run_stage(cfg, Stage("stage2", ld, data, "diffusion.ckpt", load, parts, plan.resume2, summary=ld_info),
                       loggers)
    result.module.set_decoder(s1.module.decode, s1.module.latent_range)
    result.module.noise_on_device = cfg.get("sampler_noise") == "device"
    return result


# ---- the run ----------------------------------------------------------------------------------------------
def train(cfg: DictConfig, report: Callable[[dict], None] = lambda metrics: None) -> Optional[dict]:
    """Run the configured stages, reporting each one's metrics as it finishes; returns all metrics of the run
    (None on non-zero DDP ranks, which train but do not evaluate)."""
    plan = preflight.check(cfg)  # everything knowable before training: data, modules, checkpoints, budgets
    log.info("data: %s", plan.datamodule)
    loggers = tracking.build_loggers(cfg)
    params = {"stage1": count_params(plan.autoencoder)}
    if plan.diffusion is not None:
        params["stage2"] = count_params(plan.diffusion.net)
    tracking.log_config(loggers, cfg, params)
    s1 = stage1(cfg, plan, loggers)
    metrics, ld, rank0 = {**runtime.STATE, **s1.info}, None, s1.rank0
    report(metrics)
    if plan.stage != "stage1":
        s2 = stage2(cfg, plan, s1, latents(cfg, s1, plan), loggers)
        metrics.update(s2.info)
        ld, rank0 = s2.module, s2.rank0
        report(metrics)
    if not rank0:
        return None
    t0 = time.perf_counter()
    run_dir = Path(cfg.paths.output_dir)
    metrics.update(evaluate(s1.module, ld, plan.datamodule, cfg.metrics, cfg.data, cfg.paths.cache_dir, run_dir,
                            plan.device))
    metrics["eval/wall_s"] = time.perf_counter() - t0
    tracking.log_final(loggers, cfg, metrics, run_dir, params)
    return metrics


def main(cfg: DictConfig) -> Optional[float]:
    """Entry point behind train.py: `train` under the task wrapper (status file, error policy, exit codes)."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (cfg.get("extras") or {}).get("print_config") and process_rank() == 0:
        print_config_tree(cfg, save_to=run_dir / "config_tree.log")
    metrics = run_task(cfg, train, run_dir / "metrics.json")
    if metrics is None:
        return None
    log.info("\n%s", summary(run_dir, metrics))
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None
