"""The stage runner both stages share: cache lookup under a lock, or fit; either way the run owns its checkpoint.

    lock entry -> intact entry? load it, link its checkpoint into the run -> done
               -> else fit (resuming from `resume`), time it, make sure the run has last.ckpt,
                  publish a weights-only copy with its info to the cache
Under DDP rank 0 does the looking and locking, and the other ranks follow its decision (`shared_decision`).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig

from ldm.run import tracking
from ldm.run.callbacks import Plateau, StepBudget, StepSeed
from ldm.run.task import process_rank
from ldm.utils import cache
from ldm.utils.checkpoint import AtomicCheckpointIO, link_or_copy, remove_stale_temporaries, run_checkpoint
from ldm.utils.config import build, instantiate_dict, plain
from ldm.utils.io import write_json
from ldm.utils.steps import batches_done

log = logging.getLogger(__name__)


def make_trainer(cfg: DictConfig, stage: str, loggers: list, extra_steps: int = 0,
                 plateau_signal: bool = True, manual_optimization: bool = False) -> L.Trainer:
    """A Trainer for one stage: its budget (+ `extra_steps` a module asks for beyond it, e.g. GAN inversion's
    encoder after a GAN at the full budget), checkpoints under checkpoints/<stage>/, the run's loggers writing
    under `<stage>/`. Under DDP a module that steps several optimizers itself (the GAN rows, VAE-GAN, DDGAN:
    each backward reaches only its own networks' parameters) gets DDP's unused-parameter handling."""
    budget = cfg[stage]
    total = int(budget.max_steps) + int(extra_steps)
    callbacks = instantiate_dict(cfg.get("callbacks"))
    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint):
            cb.dirpath = str(run_checkpoint(cfg.paths.output_dir, stage).parent)
    callbacks += [StepBudget(total), StepSeed(cfg.seed)]
    if budget.get("plateau") and plateau_signal:  # stop on a validation plateau, max_steps the cap (Plateau)
        callbacks.append(Plateau(**budget.plateau))
    loggers = tracking.for_stage(loggers, stage)
    if not loggers:  # nothing to report learning rates to (logger=none)
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    extra = {} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}  # no torn checkpoints
    if manual_optimization and str(cfg.trainer.get("strategy")) == "ddp":
        extra["strategy"] = "ddp_find_unused_parameters_true"
    trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False, max_steps=-1, max_epochs=-1,
                    val_check_interval=min(budget.val_every, total), check_val_every_n_epoch=None, **extra)
    if getattr(trainer.profiler, "filename", None):  # debug=profiler: one report per stage, not one overwritten
        trainer.profiler.filename = f"{stage}-{trainer.profiler.filename}"
    return trainer


@dataclass
class Stage:
    """What differs between stage 1 and stage 2; everything else is `run_stage`."""

    name: str                                 # "stage1" | "stage2": config key, checkpoint folder, metric prefix
    module: L.LightningModule                 # built from the config, to be trained
    datamodule: Any
    cache_file: str                           # the checkpoint's name inside a cache entry
    load: Callable[[Path], Any]               # safe loader of a cached checkpoint
    parts: dict                               # what determines the result: the cache key
    resume: Optional[str] = None              # a checkpoint to continue from (never cached)
    summary: Callable[[Any], dict] = field(default=lambda module: {})  # stage-specific info of the result


@dataclass
class Result:
    module: Any
    info: dict
    rank0: bool
    entry: Optional[cache.Entry]


def compile_networks(module: Any, cache_dir: str) -> list[str]:
    """`torch.compile` each trained network of `module` in place (`nn.Module.compile`: parameter names, checkpoints and
    the cache stay as they are). Inductor's cache lives under `<cache_dir>/inductor`, so a graph is compiled once
    per machine and code version, not once per job. Returns the compiled children's names."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(cache_dir) / "inductor"))
    names = []
    for child_name, child in module.named_children():
        if isinstance(child, torch.nn.Module) and any(p.requires_grad for p in child.parameters()):  # not EMA
            child.compile()
            names.append(child_name)
    return names


CACHE_DECISION_ENV = "LDM_CACHE_{}"  # rank 0's hit or miss for a stage, inherited by the DDP ranks it launches later


def shared_decision(name: str, rank: int, mine: Optional[bool], own_look: Callable[[], bool]) -> bool:
    """Whether stage `name` comes from the cache, the same on every rank of a DDP run. Rank 0 decides (`mine`, its
    look under the entry's lock) and passes it on: in the environment, which the ranks it launches at its next
    fit inherit, and by a broadcast to ranks that already run (launched at an earlier stage's fit). Another rank
    takes it from whichever of the two it has; a rank that has neither (launched on its own, by SLURM or torchrun)
    looks for itself (`own_look`): entries are only ever added, so it could differ only if a concurrent job
    published this very entry between the two looks."""
    import torch.distributed as dist

    env = CACHE_DECISION_ENV.format(name.upper())
    group = dist.is_available() and dist.is_initialized()
    if rank == 0:
        os.environ[env] = "hit" if mine else "miss"
        if group:
            dist.broadcast_object_list([bool(mine)], src=0)
        return bool(mine)
    if env in os.environ:
        return os.environ[env] == "hit"
    if group:
        got = [None]
        dist.broadcast_object_list(got, src=0)
        return bool(got[0])
    return own_look()


def run_stage(cfg: DictConfig, stage: Stage, loggers: list = ()) -> Result:
    """Train `stage` (or take it from the cache); returns the module, its `<stage>/*` info and the cache entry.

    Under DDP the cache works as with one process, with a DDP result as its own entry (its numbers are close to a
    one-device run's, not equal): rank 0 looks it up under the lock and every rank follows its decision
    (`shared_decision`); on a miss all ranks train, then write the weights together (a checkpoint write is a
    collective) and rank 0 publishes them."""
    name = stage.name
    compiled = bool((cfg.get("compile") or {}).get(name, False))
    if compiled:  # numerics differ from eager at ~1e-6: a compiled result is its own cache entry
        stage.parts = {**stage.parts, "compile": True}
        log.info("%s: torch.compile %s", name, ", ".join(compile_networks(stage.module, cfg.paths.cache_dir)))
    trainer = make_trainer(cfg, name, list(loggers), getattr(stage.module, "extra_steps", 0),
                           getattr(stage.module, "plateau_signal", True),
                           manual_optimization=not stage.module.automatic_optimization)
    world = trainer.world_size
    if world > 1:  # close to a one-device result, not equal to it: its own entry
        stage.parts = {**stage.parts, "devices": world}
    key = cache.key(stage.parts)
    cached = bool((cfg.get("cache") or {}).get(name, False)) and not stage.resume
    entry = cache.Entry(cfg.paths.cache_dir, name, key, stage.parts) if cached else None
    rank = process_rank() if world > 1 else 0
    ckpt = run_checkpoint(cfg.paths.output_dir, name)
    with entry.locked() if entry is not None and rank == 0 else nullcontext():
        module = entry.load(stage.cache_file, stage.load) if entry is not None and rank == 0 else None
        if entry is not None and world > 1 and shared_decision(name, rank, module is not None,
                                                               lambda: entry.problem() is None) and rank != 0:
            module = stage.load(entry.path(stage.cache_file))  # rank 0 found it intact (under its lock)
        if module is not None:
            if rank == 0:
                link_or_copy(entry.path(stage.cache_file), ckpt)  # the run owns its result, also without .cache
                log.info("%s: reusing %s from the cache (%s)", name, type(module).__name__, entry.dir)
            return Result(module, {**entry.info(), f"{name}/reused": True, f"{name}/source": "cache",
                                   f"{name}/cache": str(entry.dir)}, rank == 0, entry)
        for tmp in remove_stale_temporaries(ckpt.parent):  # a killed earlier attempt's half-written checkpoint
            log.info("%s: removed %s, left by a process that was killed while writing it", name, tmp.name)
        # the run's config is logged once by ldm.run.tracking, not each module's hparams by each Trainer
        stage.module._log_hyperparams = stage.datamodule._log_hyperparams = False
        t0 = time.perf_counter()
        trainer.fit(stage.module, datamodule=stage.datamodule, ckpt_path=stage.resume, weights_only=True)
        wall = time.perf_counter() - t0
        if not trainer.strategy.broadcast(ckpt.is_file()):  # callbacks=none, or a resume with nothing left to do
            trainer.save_checkpoint(ckpt)
        val = trainer.callback_metrics.get("val/loss")
        info = {f"{name}/reused": False, f"{name}/source": "resumed" if stage.resume else "trained",
                f"{name}/steps": batches_done(trainer), f"{name}/wall_s": wall,
                f"{name}/val_loss": float(val) if val is not None else None, f"{name}/key": key,
                f"{name}/devices": trainer.world_size,  # DDP: the batch is global, split over these devices
                **stage.summary(stage.module)}
        if stage.resume:
            info[f"{name}/resumed_from"] = str(stage.resume)
        plateau = next((cb for cb in trainer.callbacks if isinstance(cb, Plateau)), None)
        if plateau is None and cfg[name].get("plateau"):  # asked for, but the module has no plateau signal
            info.update({f"{name}/stop": "cap", f"{name}/cap": batches_done(trainer),
                         f"{name}/plateau_monitor": "none (no plateau signal: trained to the cap)"})
        if plateau is not None:
            info.update(plateau.summary(name, int(cfg[name].max_steps) + getattr(stage.module, "extra_steps", 0)))
            if trainer.is_global_zero:  # every validation's value: the curve the stop was read off
                write_json(Path(cfg.paths.output_dir) / f"plateau_{name}.json",
                           {"monitor": plateau.monitor, "rule": plain(cfg[name].plateau), "trace": plateau.trace,
                            "stopped_step": plateau.stopped_step, "best_step": plateau.best_step})
        if entry is not None and world > 1:  # every rank writes (a collective), rank 0's file is published
            weights = ckpt.with_name(f".{key}.cache.ckpt")
            trainer.save_checkpoint(weights, weights_only=True)
            if trainer.is_global_zero:
                entry.publish({stage.cache_file: weights}, info)
                weights.unlink(missing_ok=True)
            trainer.strategy.barrier("stage cache published")  # the ranks read the entry next (its latents' key)
        elif entry is not None and trainer.is_global_zero:
            entry.publish({stage.cache_file: lambda tmp: trainer.save_checkpoint(tmp, weights_only=True)}, info)
    return Result(stage.module, info, trainer.is_global_zero, entry)
