"""Hydra helpers: build objects from `_target_` configs while keeping plain, checkpoint-safe hparams.

Every `_target_` passes an allowlist before Hydra imports or calls it, wherever the config came from
(command line, a run directory's `.hydra/config.yaml`, a checkpoint's hyper-parameters): a config is
data, and data must not be able to call `builtins.open` or `os.system`.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Iterable, Optional

import hydra
from hydra._internal.utils import _locate
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from ldm.errors import ConfigError, UserError

# What a `_target_` may name: this package's networks, losses, rows, diffusion, data, callbacks and feature
# extractors;
# torch optimizers and nn modules; Lightning's Trainer, callbacks and loggers. The object it resolves
# to must also be defined under ALLOWED_MODULES (re-exports such as lightning.pytorch.Trainer live
# deeper). Extend both with LDM_EXTRA_TARGETS=mypkg,other.module (comma-separated) for code you trust.
ALLOWED_TARGETS = ("ldm.nets", "ldm.losses", "ldm.autoencoders", "ldm.diffusion", "ldm.data", "ldm.run.callbacks",
                   "ldm.metrics.evaluator", "ldm.metrics.inception", "torch.optim", "torch.nn",
                   "lightning.pytorch.Trainer", "lightning.pytorch.callbacks", "lightning.pytorch.loggers",
                   "lightning.pytorch.profilers")
ALLOWED_MODULES = ALLOWED_TARGETS[:-4] + ("lightning.pytorch.trainer.trainer", "lightning.pytorch.callbacks",
                                          "lightning.pytorch.loggers", "lightning.pytorch.profilers")
# What a checkpoint's hyper-parameters may name: the parts a module builds itself (networks, losses,
# schedules, samplers, optimizers); never a Trainer, logger, callback or data module.
MODEL_TARGETS = ("ldm.nets", "ldm.losses", "ldm.diffusion", "torch.optim", "torch.nn")
HINT = ("only this package's classes, torch.optim, torch.nn and Lightning's Trainer/callbacks/loggers/profilers may be "
        "instantiated; if you trust it, add its module to LDM_EXTRA_TARGETS")


def _extra() -> tuple[str, ...]:
    return tuple(p.strip().rstrip(".") for p in os.environ.get("LDM_EXTRA_TARGETS", "").split(",") if p.strip())


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    """`name` is one of `prefixes` or lies below one of them (dotted path)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def check_target(target: Any, key: str = "_target_", where: str = "the config",
                 allowed: Optional[tuple[str, ...]] = None) -> Any:
    """The object `target` names, if the name and the module that defines the object are both allowed.

    Checking the resolved object too closes paths like `ldm.nets.unet.torch.load`, which start with an
    allowed prefix but reach a foreign function through a module attribute.
    """
    names, modules = (ALLOWED_TARGETS, ALLOWED_MODULES) if allowed is None else (allowed, allowed)
    if not isinstance(target, str) or not _under(target, names + _extra()):
        raise ConfigError(f"{where}: {key}={target} is not an allowed target: {HINT}")
    try:
        obj = _locate(target)  # hydra's resolver, without the error log of hydra.utils.get_object
    except Exception as e:  # ImportError, AttributeError, ... from hydra's locate
        raise ConfigError(f"{where}: {key}={target} cannot be imported ({type(e).__name__}): fix the name") from None
    owner = getattr(obj, "__module__", None) or "?"
    if not callable(obj) or not _under(owner, modules + _extra()):
        raise ConfigError(f"{where}: {key}={target} resolves to {owner}.{getattr(obj, '__qualname__', '?')}, "
                          f"which is not an allowed target: {HINT}")
    return obj


def check_targets(cfg: Any, where: str = "the config", path: str = "",
                  allowed: Optional[tuple[str, ...]] = None) -> None:
    """Refuse (ConfigError naming the key) any `_target_` anywhere in `cfg` that is not allowed."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            key = f"{path}.{k}" if path else str(k)
            if k == "_target_":
                check_target(v, key, where, allowed)
            else:
                check_targets(v, where, key, allowed)
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            check_targets(v, where, f"{path}[{i}]", allowed)


def plain(cfg: Any) -> Any:
    """DictConfig/ListConfig -> resolved dicts/lists (safe to pickle, to save as hparams, to load weights_only)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _instantiate(cfg: Any, where: str, **kwargs: Any) -> Any:
    """hydra.utils.instantiate after the allowlist check; our own UserErrors come out unwrapped."""
    check_targets(cfg, where)
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except InstantiationException as e:
        cause: Optional[BaseException] = e
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause.with_traceback(None) from None
        raise


def instantiate_module(cfg: Any, where: str = "the config", **kwargs: Any) -> Any:
    """Instantiate the top level of `cfg`, passing nested configs as plain dicts (not objects).

    LightningModules build their own networks and optimizers from those dicts and save them as
    hyper-parameters, so a checkpoint loads alone with `ldm.utils.checkpoint.load_module`.
    """
    return _instantiate(plain(cfg), where, _recursive_=False, _convert_="all", **kwargs)


def build(cfg: Any, *args: Any, where: str = "the config", **kwargs: Any) -> Any:
    """Instantiate a `_target_` config (dict or DictConfig), recursively; `_partial_` configs are called."""
    obj = _instantiate(cfg, where, **kwargs)
    return obj(*args) if args else obj


def build_optimizer(cfg: Any, params: Iterable) -> Any:
    """An optimizer config (`_target_`, `_partial_: true`, lr, ...) applied to `params`.

    Optimizers that have a multi-tensor (`foreach`) implementation get it unless the config chooses: torch
    picks it by default on GPUs only, while on CPU it gives bit-identical updates with one call per step
    instead of several per parameter (tests/test_speed.py checks the identity; benchmarks/RESULTS.md the time).
    """
    opt = _instantiate(cfg, "the optimizer config")
    if isinstance(opt, functools.partial) and "foreach" not in opt.keywords and \
            "foreach" in inspect.signature(opt.func).parameters:
        opt = functools.partial(opt, foreach=True)
    return opt(params=params)


def instantiate_dict(cfg: Any) -> list[Any]:
    """Instantiate each `_target_` value of a dict config (callbacks, loggers); None/empty gives []."""
    if not cfg:
        return []
    return [_instantiate(v, "the config") for v in cfg.values() if v is not None and "_target_" in v]


def get_class(target: str, key: str = "_target_", where: str = "the config") -> type:
    """The class a `_target_` names, after the allowlist check."""
    obj = check_target(target, key, where)
    if not isinstance(obj, type):
        raise ConfigError(f"{where}: {key}={target} is not a class")
    return obj
