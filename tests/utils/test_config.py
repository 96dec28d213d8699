"""The `_target_` allowlist: what every conf/ file names passes; foreign or smuggled targets are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ldm.errors import ConfigError
from ldm.utils.config import MODEL_TARGETS, build, check_target, check_targets

CONF = Path(__file__).resolve().parents[2] / "conf"


def targets(node):
    """Every `_target_` our code builds; those under `hydra:` (e.g. the Optuna sweeper's sampler) Hydra builds."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "hydra":
                continue
            if k == "_target_":
                yield v
            else:
                yield from targets(v)
    elif isinstance(node, list):
        for v in node:
            yield from targets(v)


def test_every_target_in_conf_is_allowed():
    found = {t for path in CONF.rglob("*.yaml") for t in targets(yaml.safe_load(path.read_text()) or {})}
    assert "lightning.pytorch.Trainer" in found and "ldm.nets.unet.UNet" in found and len(found) >= 20
    for target in found:
        check_target(target)


@pytest.mark.parametrize("target, reason", [
    ("builtins.open", "is not an allowed target"),
    ("os.system", "is not an allowed target"),
    ("ldm.utils.io.write_json", "is not an allowed target"),          # ours, but writes files
    ("ldm.nets.unet.torch.load", "resolves to torch.serialization.load"),  # allowed prefix, foreign object
    ("ldm.nets.nope", "cannot be imported"),
    ("torch.nn.MSELossX", "cannot be imported"),
])
def test_foreign_targets_are_refused(target, reason):
    with pytest.raises(ConfigError, match=reason):
        check_target(target, "x._target_", "somewhere")


def test_checkpoint_targets_are_model_parts_only():
    check_target("ldm.nets.unet.UNet", allowed=MODEL_TARGETS)
    with pytest.raises(ConfigError):
        check_target("lightning.pytorch.loggers.CSVLogger", allowed=MODEL_TARGETS)


def test_nested_targets_are_found_and_named(tmp_path):
    cfg = {"a": {"b": [{"_target_": "torch.nn.Identity"}, {"_target_": "builtins.open"}]}}
    with pytest.raises(ConfigError, match=r"^run: a\.b\[1\]\._target_=builtins\.open is not"):
        check_targets(cfg, "run")
    with pytest.raises(ConfigError):
        build({"_target_": "builtins.open", "_args_": [str(tmp_path / "x"), "w"]})
    assert not (tmp_path / "x").exists()


def test_extra_targets_from_the_environment(monkeypatch):
    with pytest.raises(ConfigError):
        check_target("json.dumps")
    monkeypatch.setenv("LDM_EXTRA_TARGETS", "json")
    assert check_target("json.dumps")({"a": 1}) == '{"a": 1}'
