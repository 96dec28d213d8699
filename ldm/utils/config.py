"""Hydra helpers: build objects from `_target_` configs while keeping plain, checkpoint-safe hparams."""

from __future__ import annotations

from typing import Any, Iterable

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf


def plain(cfg: Any) -> Any:
    """DictConfig/ListConfig -> resolved dicts/lists (safe to pickle, to save as hparams, to load weights_only)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def instantiate_module(cfg: Any, **kwargs: Any) -> Any:
    """Instantiate the top level of `cfg`, passing nested configs as plain dicts (not objects).

    LightningModules build their own networks and optimizers from those dicts and save them as
    hyper-parameters, so a checkpoint loads alone with `load_from_checkpoint`.
    """
    return hydra.utils.instantiate(plain(cfg), _recursive_=False, _convert_="all", **kwargs)


def build(cfg: Any, *args: Any, **kwargs: Any) -> Any:
    """Instantiate a `_target_` config (dict or DictConfig), recursively; `_partial_` configs are called."""
    obj = hydra.utils.instantiate(cfg, **kwargs)
    return obj(*args) if args else obj


def build_optimizer(cfg: Any, params: Iterable) -> Any:
    """An optimizer config (`_target_`, `_partial_: true`, lr, ...) applied to `params`."""
    return hydra.utils.instantiate(cfg)(params=params)


def instantiate_dict(cfg: Any) -> list[Any]:
    """Instantiate each `_target_` value of a dict config (callbacks, loggers); None/empty gives []."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(v) for v in cfg.values() if v is not None and "_target_" in v]
