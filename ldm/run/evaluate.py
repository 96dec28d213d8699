"""evaluate.py on one run: evaluate a finished run (or an export) into eval.json and figures, or export it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ldm.diffusion.samplers import check_sampler
from ldm.run.evaluation import evaluate, upgrade_metrics
from ldm.run.export import export
from ldm.run.loading import device_for, load
from ldm.utils.config import build, plain
from ldm.utils.io import write_json

log = logging.getLogger(__name__)


def overridden(prefix: str) -> list[str]:
    """Keys below `prefix` that this command line sets (`metrics.num_samples=1000` and `metrics/features=x`
    give `num_samples` and `features`)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    keys = [o.lstrip("+~").split("=", 1)[0] for o in HydraConfig.get().overrides.task]
    return [k[len(prefix) + 1:] for k in keys if k.startswith((prefix + ".", prefix + "/"))]


def metrics_config(cfg: DictConfig, run_cfg: DictConfig) -> dict:
    """The run's own metrics config (what it was evaluated with when it finished), with what this command line
    overrides; the sampling seed is the run's unless `seed=` is given."""
    merged = OmegaConf.create(upgrade_metrics(plain(run_cfg.get("metrics")) or {}, plain(cfg.metrics)))
    for key in overridden("metrics"):
        dotted = key.replace("/", ".")
        OmegaConf.update(merged, dotted, OmegaConf.select(cfg.metrics, dotted), merge=False)
    metrics = OmegaConf.to_container(merged, resolve=True)
    metrics["seed"] = int(cfg.seed) if cfg.get("seed") is not None else int(run_cfg.get("seed") or 0)
    return metrics


def evaluate_run(cfg: DictConfig, run_dir: Path, out_dir: Path) -> dict:
    """Evaluate one finished run (a train.py run directory or an export); writes <out_dir>/eval.json and figures."""
    model = load(run_dir, cfg.checkpoint)
    ld, info = model.diffusion, dict(model.info)
    if ld is not None:
        ld.noise_on_device = cfg.get("sampler_noise") == "device"
    if ld is not None and cfg.get("sampler"):
        ld.sampler = build(plain(cfg.sampler))
        check_sampler(ld.sampler, ld.process.num_timesteps)
        info["eval/sampler"] = cfg.sampler._target_.rsplit(".", 1)[-1]
    datamodule = build(model.config.data)
    datamodule.setup()
    metrics = metrics_config(cfg, model.config)
    info["eval/seed"] = metrics["seed"]
    t0 = time.perf_counter()
    result = evaluate(model.autoencoder, ld, datamodule, metrics, model.config.data, cfg.paths.cache_dir, out_dir,
                      device_for(cfg.device))
    result.update(info)
    result["eval/wall_s"] = time.perf_counter() - t0
    write_json(out_dir / "eval.json", {"status": "ok", **result})
    log.info("wrote %s", out_dir / "eval.json")
    return result


def export_run(cfg: DictConfig, run_dir: Path, out: Path) -> dict:
    """`evaluate.py run_dir=<run> export=<dir>`: the run's two stages and config as one loadable directory."""
    model = load(run_dir, cfg.checkpoint)
    datamodule = build(model.config.data)
    datamodule.setup()
    model.class_names = datamodule.class_names
    export(model, out, source=str(run_dir))
    log.info("exported %s to %s (load it with ldm.run.loading.load, sample it with sample.py run_dir=%s)",
             run_dir, out, out)
    return {"export": str(out)}
