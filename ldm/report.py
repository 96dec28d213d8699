"""evaluate.py's logic: load a finished run from its checkpoints (weights_only) and evaluate it."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from ldm.errors import ConfigError, UserError
from ldm.evaluation import evaluate
from ldm.utils.config import build, instantiate_module, plain
from ldm.utils.io import write_json

log = logging.getLogger(__name__)


def pick_checkpoint(run_dir: Path, stage: str, which: str) -> Optional[Path]:
    """checkpoints/<stage>/last.ckpt or the best-*.ckpt; None when the stage has no checkpoint."""
    folder = run_dir / "checkpoints" / stage
    if which == "last":
        path = folder / "last.ckpt"
        return path if path.is_file() else None
    if which == "best":
        best = sorted(folder.glob("best-*.ckpt"))
        return best[-1] if best else None
    raise ConfigError(f"checkpoint={which}: choose last or best")


def load_run(run_dir: Path, which: str = "last") -> tuple[DictConfig, Any, Optional[Any], dict]:
    """(training config, autoencoder, latent diffusion or None, info) of a finished run; weights_only loads."""
    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"run_dir={run_dir} has no .hydra/config.yaml: point run_dir at a train.py run directory")
    cfg = OmegaConf.load(cfg_path)
    ae_cfg = plain(cfg.autoencoder)
    reused = ae_cfg.pop("ckpt_path", None)
    cls = hydra.utils.get_class(ae_cfg["_target_"])
    ae_ckpt = pick_checkpoint(run_dir, "stage1", which) or (Path(reused) if reused else None)
    info = {"eval/stage1_checkpoint": str(ae_ckpt) if ae_ckpt else None}
    if ae_ckpt is not None:
        ae = cls.load_from_checkpoint(ae_ckpt, map_location="cpu", weights_only=True)
    else:
        ae = instantiate_module(ae_cfg)
        if sum(p.numel() for p in ae.parameters()):
            raise ConfigError(f"run_dir={run_dir} has no stage-1 checkpoint (checkpoints/stage1/{which}.ckpt)")
    ld = None
    ld_ckpt = pick_checkpoint(run_dir, "stage2", which)
    info["eval/stage2_checkpoint"] = str(ld_ckpt) if ld_ckpt else None
    if ld_ckpt is not None:
        from ldm.diffusion.module import LatentDiffusion

        ld = LatentDiffusion.load_from_checkpoint(ld_ckpt, map_location="cpu", weights_only=True)
        ld.set_decoder(ae.decode)
    return cfg, ae, ld, info


def evaluate_run(cfg: DictConfig, run_dir: Path, out_dir: Path) -> dict:
    """Evaluate one finished train.py run from its checkpoints; writes <out_dir>/eval.json and the figures."""
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is not a directory: pass a train.py run directory")
    train_cfg, ae, ld, info = load_run(run_dir, cfg.checkpoint)
    if ld is not None and cfg.get("sampler"):
        ld.sampler = build(plain(cfg.sampler))
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


def table(cfg: DictConfig) -> None:
    from ldm import tables

    name, eval_file, out = cfg.table.name, cfg.table.eval_file, Path(cfg.table.dir)
    if cfg.table.reevaluate:
        records, _ = tables.collect(out, eval_file)
        done = [r for r in records if r["status"] == "ok"]
        for i, r in enumerate(done):
            job = out / r["job"]
            log.info("re-evaluating job %s (%d/%d) into %s", r["job"], i + 1, len(done), job / eval_file)
            evaluate_run(cfg, job, (job / eval_file).parent)
    result = tables.build(out, plain(cfg.table.columns), cfg.table.title, eval_file=eval_file, name=name)
    print((out / f"{name}.md").read_text())
    log.info("wrote %s, %s.csv, %s.tex (%d rows, %d failed/missing jobs)", out / f"{name}.md", name, name,
             len(result["rows"]), len(result["bad"]))


def main(cfg: DictConfig) -> Optional[float]:
    try:
        if cfg.get("table") and cfg.table.get("dir"):
            return table(cfg)
        if not cfg.run_dir:
            raise ConfigError("pass run_dir=<train.py run directory> (or table.dir=<multirun directory>)")
        result = evaluate_run(cfg, Path(cfg.run_dir), Path(cfg.out_dir))
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    for k in ("eval/evaluator_acc", "eval/fid_floor", "recon/psnr", "recon/rfid", "recon/class_accuracy",
              "latent/prior_fid", "gen/fid", "gen/kid", "gen/classes_covered"):
        if k in result:
            log.info("  %-22s %s", k, f"{result[k]:.4g}" if isinstance(result[k], float) else result[k])
    return result.get("gen/fid")
