"""The jobs of one Hydra multirun, enumerated with Hydra's own override parser (as BasicSweeper runs them)."""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from ldm.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


class _GroupOptions:
    """The one ConfigLoader method glob() sweeps call: a group's options are its YAML files. Standing in for
    Hydra's loader avoids composing the primary config (slow, and it needs the config name and search path)."""

    def __init__(self, conf_dir: Path) -> None:
        self.conf_dir = conf_dir

    def get_group_options(self, group_name: str, results_filter: ObjectType | None = ObjectType.CONFIG,
                          **_: Any) -> list[str]:
        folder = self.conf_dir / group_name.replace(".", "/")
        if not folder.is_dir():
            raise ConfigError(f"glob() over `{group_name}`: no config group folder {folder}; "
                              f"sweep an existing group (a folder under {self.conf_dir}) or list the values")
        # version_base>=1.2 (this project: 1.3) lists only *.yaml; sorted like Hydra's ConfigRepository
        return sorted(p.stem for p in folder.iterdir() if p.suffix == ".yaml" and p.is_file())


def _parse(overrides: list[str], conf_dir: Path) -> list[Override]:
    parser = OverridesParser.create(config_loader=_GroupOptions(conf_dir))  # type: ignore[arg-type]
    parsed = []
    for o in overrides:
        if o in ("-m", "--multirun"):
            continue
        try:
            parsed.extend(parser.parse_overrides([o]))
        except HydraException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"override `{o}` is not valid Hydra override syntax ({first}); write key=value, "
                              f"quote values with special characters, e.g. key='a=b'") from None
    return parsed


def _choices(overrides: list[str], conf_dir: Path | None) -> dict[str, list[str]]:
    """{key: the value strings it takes}, in the order BasicSweeper.split_arguments builds its product."""
    out: dict[str, list[str]] = {}
    for ov in _parse(overrides, Path(conf_dir) if conf_dir is not None else CONF_DIR):
        if ov.is_hydra_override():
            continue  # launcher / sweep-dir settings: not part of what a job computes
        key = ov.get_key_element()
        if not ov.is_sweep_override():
            values = [ov.get_value_element_as_str()]
        elif ov.is_discrete_sweep():
            try:  # range() is only checked when enumerated, e.g. a zero step
                values = list(ov.sweep_string_iterator())
            except (HydraException, ValueError) as e:
                raise ConfigError(f"override `{ov.input_line}` cannot be enumerated ({e}); fix its arguments, "
                                  f"e.g. range(start, stop, step) with a non-zero step") from None
        else:
            raise ConfigError(f"override `{ov.input_line}` is an interval sweep, which has no finite list of jobs "
                              f"(only optimising sweepers such as Optuna sample it); use choice(...) or range(...)")
        # a repeated key replaces the earlier values but keeps its place, like split_arguments' OrderedDict
        out[key] = values
    return out


def expand(overrides: list[str], conf_dir: Path | None = None) -> list[dict[str, str]]:
    """The jobs of one multirun, each {key as written: value string Hydra passes}, in BasicSweeper's order
    (the cartesian product, the last override varying fastest). `conf_dir` holds the groups glob() lists."""
    choices = _choices(overrides, conf_dir)
    return [dict(zip(choices, combo)) for combo in itertools.product(*choices.values())]


def count_jobs(overrides: list[str], conf_dir: Path | None = None) -> int:
    """How many jobs `expand` gives, without building them."""
    return math.prod(len(v) for v in _choices(overrides, conf_dir).values())
