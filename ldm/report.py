"""evaluate.py's logic: load a finished run from its checkpoints (weights_only) and evaluate it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from ldm.errors import ConfigError, UserError
from ldm.autoencoders.base import Autoencoder
from ldm.diffusion.samplers import check_sampler
from ldm.evaluation import evaluate
from ldm.task import UNFINISHED, one_line, read_status, run_task
from ldm.utils.checkpoint import check_fits, load_module
from ldm.utils.config import build, check_targets, instantiate_module, plain
from ldm.utils.io import write_json

log = logging.getLogger(__name__)


PATTERN = {"last": "last.ckpt", "best": "best-*.ckpt"}  # checkpoint=... -> file name in checkpoints/<stage>/


def pick_checkpoint(run_dir: Path, stage: str, which: str) -> Optional[Path]:
    """checkpoints/<stage>/last.ckpt or the (latest) best-*.ckpt; None when the stage has no such checkpoint."""
    if which not in PATTERN:
        raise ConfigError(f"checkpoint={which}: choose last or best")
    found = sorted((run_dir / "checkpoints" / stage).glob(PATTERN[which]))
    return found[-1] if found else None


def load_run(run_dir: Path, which: str = "last") -> tuple[DictConfig, Any, Optional[Any], dict]:
    """(training config, autoencoder, latent diffusion or None, info) of a finished run.

    The run's config passes the `_target_` allowlist before anything is built from it; checkpoints are
    read weights-only and checked against that config; a run whose training did not finish is refused.
    """
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"run_dir={run_dir} has no .hydra/config.yaml: point run_dir at a train.py run directory")
    where = f"run_dir={run_dir} (.hydra/config.yaml)"
    try:
        cfg = OmegaConf.load(cfg_path)
    except Exception as e:
        raise ConfigError(f"{where} cannot be read ({type(e).__name__}): the run directory is damaged") from None
    check_targets(cfg, where)
    status = read_status(run_dir / "metrics.json")["status"]
    if status in UNFINISHED:
        raise ConfigError(f"run_dir={run_dir} is {status}: its training did not finish; continue it with "
                          f"`train.py resume={run_dir} <its overrides>`, then evaluate it")
    ae_cfg = plain(cfg.autoencoder)
    ae_cfg.pop("ckpt_path", None)
    configured = instantiate_module(ae_cfg, where)
    ae_ckpt = pick_checkpoint(run_dir, "stage1", which)
    info = {"eval/stage1_checkpoint": str(ae_ckpt) if ae_ckpt else None}
    if ae_ckpt is not None:
        ae = load_module(ae_ckpt, "checkpoint", expected=type(configured))
        check_fits(ae, configured, "checkpoint", ae_ckpt)
    elif sum(p.numel() for p in configured.parameters()):
        raise ConfigError(f"run_dir={run_dir} has no stage-1 checkpoint (checkpoints/stage1/{PATTERN[which]}): "
                          f"train the run again (finished runs own their checkpoints, also when a stage came from "
                          f"the cache)")
    else:
        ae = configured  # nothing to load (identity)
    ld = None
    ld_ckpt = pick_checkpoint(run_dir, "stage2", which)
    info["eval/stage2_checkpoint"] = str(ld_ckpt) if ld_ckpt else None
    if ld_ckpt is not None:
        from ldm.diffusion.module import LatentDiffusion

        ld = load_module(ld_ckpt, "checkpoint", expected=LatentDiffusion)
        if tuple(ld.latent_shape) != tuple(ae.latent_shape):
            raise ConfigError(f"checkpoint={ld_ckpt} models latents of shape {ld.latent_shape}, but the run's "
                              f"autoencoder makes {tuple(ae.latent_shape)}: the run directory mixes two runs")
        ld.set_decoder(ae.decode)
    elif cfg.get("stage", "all") != "stage1" and isinstance(ae, Autoencoder):
        raise ConfigError(f"run_dir={run_dir} has no stage-2 checkpoint (checkpoints/stage2/{PATTERN[which]}) "
                          f"although its config ran stage 2: train the run again")
    return cfg, ae, ld, info


def evaluate_run(cfg: DictConfig, run_dir: Path, out_dir: Path) -> dict:
    """Evaluate one finished train.py run from its checkpoints; writes <out_dir>/eval.json and the figures."""
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is not a directory: pass a train.py run directory")
    train_cfg, ae, ld, info = load_run(run_dir, cfg.checkpoint)
    if ld is not None and cfg.get("sampler"):
        ld.sampler = build(plain(cfg.sampler))
        check_sampler(ld.sampler, ld.process.num_timesteps)
        info["eval/sampler"] = cfg.sampler._target_.rsplit(".", 1)[-1]
    datamodule = build(train_cfg.data)
    datamodule.setup()
    dev = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = plain(cfg.metrics)
    if metrics.get("seed") is None:  # seed=null (the default): sample with the run's own seed, as training did
        metrics["seed"] = int(train_cfg.get("seed") or 0)
    info["eval/seed"] = metrics["seed"]
    t0 = time.perf_counter()
    result = evaluate(ae, ld, datamodule, metrics, train_cfg.data, cfg.paths.cache_dir, out_dir, torch.device(dev))
    result.update(info)
    result["eval/wall_s"] = time.perf_counter() - t0
    write_json(out_dir / "eval.json", {"status": "ok", **result})
    log.info("wrote %s", out_dir / "eval.json")
    return result


def _relative(value: str, key: str, plain_name: bool = False) -> str:
    """A file name (or relative path) that stays inside its directory; ConfigError otherwise."""
    p = Path(str(value))
    bad = p.is_absolute() or not p.parts or ".." in p.parts or (plain_name and (len(p.parts) != 1 or p.name != value))
    if bad:
        what = "a plain file name" if plain_name else "a relative path without '..'"
        raise ConfigError(f"{key}={value} must be {what}: outputs stay inside table.dir")
    return str(value)


def table(cfg: DictConfig) -> None:
    from ldm import tables

    out = Path(cfg.table.dir)
    name = _relative(cfg.table.name, "table.name", plain_name=True)
    eval_file = _relative(cfg.table.eval_file, "table.eval_file")
    if cfg.table.reevaluate:
        records, _ = tables.collect(out, eval_file)
        done = [r for r in records if r["status"] == "ok"]
        for i, r in enumerate(done):
            job = out / r["job"]
            log.info("re-evaluating job %s (%d/%d) into %s", r["job"], i + 1, len(done), job / eval_file)
            try:
                evaluate_run(cfg, job, (job / eval_file).parent)
            except UserError as e:  # one bad job does not cost the others their table
                log.error("job %s not re-evaluated: %s", r["job"], one_line(e))
    result = tables.build(out, plain(cfg.table.columns), cfg.table.title, eval_file=eval_file, name=name)
    print((out / f"{name}.md").read_text())
    log.info("wrote %s, %s.csv, %s.tex (%d rows, %d failed/missing jobs)", out / f"{name}.md", name, name,
             len(result["rows"]), len(result["bad"]))


def _task(cfg: DictConfig, report: Any) -> dict:
    if cfg.get("table") and cfg.table.get("dir"):
        table(cfg)
        return {}
    if not cfg.run_dir:
        raise ConfigError("pass run_dir=<train.py run directory> (or table.dir=<multirun directory>)")
    return evaluate_run(cfg, Path(cfg.run_dir), Path(cfg.out_dir))


def main(cfg: DictConfig) -> Optional[float]:
    """Entry point behind evaluate.py, under the task wrapper (one `error:` line and exit 2 on bad input)."""
    result = run_task(cfg, _task) or {}
    for k in ("eval/evaluator_acc", "eval/fid_floor", "recon/psnr", "recon/rfid", "recon/class_accuracy",
              "latent/prior_fid", "gen/fid", "gen/kid", "gen/classes_covered"):
        if k in result:
            log.info("  %-22s %s", k, f"{result[k]:.4g}" if isinstance(result[k], float) else result[k])
    return result.get("gen/fid")
