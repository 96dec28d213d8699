"""Types and ranges of the numeric and list settings, checked before anything is built or trained.

One small typed spec per entry (train.py, evaluate.py, sample.py) instead of a list of ifs: `Int`, `Float`, `List`
say what a setting must be; `validate` walks the spec over the composed config and raises a `ConfigError` that
names the setting, its value and what it must be, for the first one that is wrong. A key the config does not have
(e.g. `autoencoder.kl_weight` for a row without a KL term) is skipped; `null` passes where `optional`.
Memory-bound sizes are checked against this machine's memory by `check_memory`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from ldm.errors import ConfigError


@dataclass(frozen=True)
class Int:
    min: Optional[int] = None
    max: Optional[int] = None
    optional: bool = False

    def problem(self, v: Any) -> Optional[str]:
        wrong = isinstance(v, bool) or not isinstance(v, int)
        if wrong or (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            return "an integer" + _range(self.min, self.max)
        return None


@dataclass(frozen=True)
class Float:
    min: Optional[float] = None     # inclusive
    above: Optional[float] = None   # exclusive lower bound
    max: Optional[float] = None
    optional: bool = False

    def problem(self, v: Any) -> Optional[str]:
        what = "a finite number" + (f" > {self.above:g}" if self.above is not None else "") + _range(self.min, self.max)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return what
        if (self.above is not None and v <= self.above) or (self.min is not None and v < self.min) or \
                (self.max is not None and v > self.max):
            return what
        return None


@dataclass(frozen=True)
class List:
    of: type = str
    optional: bool = True

    def problem(self, v: Any) -> Optional[str]:
        if not isinstance(v, (list, tuple, ListConfig)) or not all(isinstance(x, self.of) for x in v):
            return f"a list of {self.of.__name__}s, e.g. [a,b] (a single value still needs the brackets)"
        return None


@dataclass(frozen=True)
class Choice:
    values: tuple

    def problem(self, v: Any) -> Optional[str]:
        return None if v in self.values else "one of " + ", ".join(map(str, self.values))


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    return f" >= {lo}" if lo is not None else f" <= {hi}" if hi is not None else ""


POSITIVE = Int(min=1)
METRICS = {"metrics.num_samples": Int(min=3, optional=True), "metrics.eval_batch": POSITIVE,
           "metrics.probe_n": POSITIVE, "metrics.kid_subsets": POSITIVE, "metrics.floor_subsets": POSITIVE,
           "metrics.interp_pairs": POSITIVE, "metrics.interp_steps": Int(min=2), "metrics.subset_n":
           Int(min=1, optional=True)}
COMMON = {"threads": Int(min=1, optional=True), "sampler_noise": Choice(("cpu", "device"))}
TRAIN = {**COMMON, **METRICS, "seed": Int(min=0), "stage1.max_steps": POSITIVE, "stage1.val_every": POSITIVE,
         "stage2.max_steps": POSITIVE, "stage2.val_every": POSITIVE, "stage2.batch_size": POSITIVE,
         "data.batch_size": POSITIVE, "data.image_size": Int(min=4), "data.num_workers": Int(min=0),
         "autoencoder.optimizer.lr": Float(above=0), "diffusion.optimizer.lr": Float(above=0),
         "autoencoder.disc_optimizer.lr": Float(above=0), "autoencoder.kl_weight": Float(min=0),
         "autoencoder.grad_clip": Float(above=0, optional=True)}
EVALUATE = {**COMMON, **METRICS, "seed": Int(min=0, optional=True), "table.columns": List(str),
            "table.converge_margin": Float(above=0)}
SAMPLE = {**COMMON, "seed": Int(min=0), "num_samples": POSITIVE, "batch_size": POSITIVE,
          "steps": Int(min=1, optional=True), "guidance_scale": Float(min=0, optional=True)}


def validate(cfg: DictConfig, spec: dict) -> None:
    """ConfigError for the first setting of `spec` present in `cfg` whose value is not what the spec says."""
    for key, rule in spec.items():
        try:
            value = OmegaConf.select(cfg, key, default=KeyError, throw_on_missing=False)
        except Exception as e:  # an interpolation that cannot resolve, e.g. ${oops}
            raise ConfigError(f"{key} cannot be resolved ({type(e).__name__}): fix its value") from None
        if value is KeyError or (value is None and rule.optional):
            continue
        problem = rule.problem(value)
        if problem:
            shown = f"'{value}'" if isinstance(value, str) else value
            raise ConfigError(f"{key}={shown} must be {problem}")


def memory_bytes() -> int:
    """This machine's physical memory (bytes)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(num_samples: Optional[int], what: str = "metrics.num_samples", fraction: float = 0.5) -> None:
    """The evaluation's largest allocation is an n x n float64 distance matrix over the samples (PRDC, the
    memorisation test); refuse an n whose matrix would take more than `fraction` of this machine's memory."""
    total = memory_bytes()
    if not num_samples or not total:
        return
    need = 8 * int(num_samples) ** 2
    if need > fraction * total:
        largest = int(math.sqrt(fraction * total / 8))
        raise ConfigError(f"{what}={num_samples} needs an n x n distance matrix of {need / 2**30:.1f} GiB in the "
                          f"evaluation, more than half of this machine's {total / 2**30:.0f} GiB: lower it (at most "
                          f"~{largest:,} here)")


def entry_check(cfg: DictConfig) -> None:
    """What an entry script reads before the task wrapper runs (`threads`): one `error:` line and exit 2."""
    import sys

    try:
        validate(cfg, COMMON)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
