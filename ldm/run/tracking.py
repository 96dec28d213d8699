"""Experiment tracking: one set of loggers per run for both stages, the resolved config logged once, the final
metrics and figures at the end.

- Runs are named by their swept choices (`autoencoder=vae,seed=1`) and grouped by experiment (the task name),
  so a dashboard can filter and group by the ablation axis; tags come from the experiment's config.
- Scalars read `stage1/train/loss`, `stage2/val/loss`: each stage writes under its name, into the same run.
- The config (nested, resolved, with the parameter count of each stage) is logged once; TensorBoard gets it
  as HParams at the end, paired with the final metrics.
- Final metrics are numbers (wandb summary and a typed table; TensorBoard scalars) and every final figure
  is logged as an image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from ldm.utils.config import build, get_class

log = logging.getLogger(__name__)
FIGURES = ("samples", "recon", "interpolation", "latent_hist", "class_hist")  # the final figures of evaluation


def _hydra() -> Optional[Any]:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def swept_name(job: list[str], sweep: list[str]) -> str:
    """A sweep job's name: only its values of the keys the sweep varies (`autoencoder=vae,seed=1`), in the sweep's
    order; `job` are the job's overrides, `sweep` the sweep's own (with its `a,b` / range() / glob() values)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(sweep))
    except Exception:  # an override the parser cannot read (a glob needs the config loader): every override
        return ",".join(job)
    swept = [o.get_key_element() for o in parsed if o.is_sweep_override() and not o.is_hydra_override()]
    values = dict(o.lstrip("+~").split("=", 1) for o in job if "=" in o)
    return ",".join(f"{k}={values[k]}" for k in swept if k in values)


def run_name(cfg: DictConfig) -> str:
    """A sweep job: its swept choices (`autoencoder=vae,seed=1`); a single run: its overrides without the ones that
    say where files go or how it is debugged (conf/hydra/default.yaml's exclude_keys); the task name if none."""
    from hydra.types import RunMode

    hc = _hydra()
    if hc is None:
        return str(cfg.task_name)
    name = hc.job.override_dirname
    sweep_file = Path(hc.sweep.dir) / "multirun.yaml" if hc.mode == RunMode.MULTIRUN else None
    if sweep_file is not None and sweep_file.is_file():
        import yaml

        try:
            sweep = (yaml.safe_load(sweep_file.read_text()) or {})["hydra"]["overrides"]["task"]
            name = swept_name(list(hc.overrides.task), list(sweep)) or name
        except (yaml.YAMLError, KeyError, TypeError):
            pass
    return name or str(cfg.task_name)


def run_group(cfg: DictConfig) -> str:
    """The experiment a run belongs to: its task name (`experiment=<name>` sets it), so every sweep of one
    experiment is one group on the dashboard; the sweep folder is the run's job_type-independent `sweep` config
    key (`ldm.run.tracking.resolved`)."""
    return str(cfg.task_name)


def build_loggers(cfg: DictConfig) -> list[Logger]:
    """The configured loggers, built once for the run (both stages write into them)."""
    loggers = []
    for spec in (cfg.get("logger") or {}).values():
        if not spec or "_target_" not in spec:
            continue
        fill = {}
        if issubclass(get_class(spec._target_, "logger._target_"), WandbLogger):  # null name/group: derived
            fill = {k: v for k, v in (("name", run_name(cfg)), ("group", run_group(cfg))) if spec.get(k) is None}
        logger = build(spec, **fill)
        logger.LOGGER_JOIN_CHAR = "/"  # stage1/train/loss, not stage1-train/loss
        loggers.append(logger)
    return loggers


def for_stage(loggers: list[Logger], stage: str) -> list[Logger]:
    """The loggers, writing under `stage/` from now on."""
    for logger in loggers:
        logger._prefix = stage
    return loggers


def choices() -> dict[str, str]:
    """The option chosen in each config group (`autoencoder: vae`, `data: digits`, ...), Hydra's own left out:
    the keys a dashboard filters and groups a sweep by."""
    hc = _hydra()
    if hc is None:
        return {}
    return {k: str(v) for k, v in hc.runtime.choices.items() if v is not None and not k.startswith("hydra")}


def resolved(cfg: DictConfig) -> dict:
    """The run's config as plain nested data (the `hydra` node left out), with the group `choices`."""
    from hydra.types import RunMode

    job = OmegaConf.to_container(cfg, resolve=True)
    job.pop("hydra", None)
    hc = _hydra()
    sweep = {"sweep": Path(hc.sweep.dir).name} if hc is not None and hc.mode == RunMode.MULTIRUN else {}
    return {**job, **sweep, "choices": choices()}


def log_config(loggers: list[Logger], cfg: DictConfig, params: dict[str, int]) -> None:
    """The resolved config and the parameter count of each stage, once per run (TensorBoard: at the end)."""
    config = {**resolved(cfg), "params": params}
    for logger in for_stage(loggers, ""):
        if not isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(config)


def numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_final(loggers: list[Logger], cfg: DictConfig, metrics: dict, run_dir: Path, params: dict[str, int]) -> None:
    """Final metrics and figures to every logger; TensorBoard also gets the config as HParams with them."""
    values = numbers(metrics)
    figures = [(name, run_dir / f"{name}.png") for name in FIGURES if (run_dir / f"{name}.png").is_file()]
    for logger in for_stage(loggers, ""):
        if isinstance(logger, WandbLogger):
            logger.log_table("final/metrics", columns=["metric", "value"], data=[[k, v] for k, v in values.items()])
            logger.experiment.summary.update(values)
            for name, path in figures:
                logger.log_image(key=f"final/{name}", images=[str(path)])
        elif isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams({**resolved(cfg), "params": params}, metrics={f"final/{k}": v
                                                                                 for k, v in values.items()})
            for name, path in figures:
                logger.experiment.add_image(f"final/{name}", _read_png(path), dataformats="HWC")
        logger.save()


def _read_png(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
