"""Every option of every config group composes; bad options get Hydra's list of valid ones."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from tests.conftest import CONF, compose_cfg

GROUPS = ["data", "autoencoder", "trainer", "logger", "callbacks", "paths", "hydra", "debug", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option, tmp_path):
    cfg = compose_cfg([f"{group}={option}"], output_dir=tmp_path)
    job = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert job["paths"]["output_dir"] == str(tmp_path)
    assert cfg.seed == 0 and cfg.stage1.max_steps >= 1


def test_groups_have_options():
    for group in ["data", "autoencoder", "trainer", "logger", "callbacks", "debug"]:
        assert options(group), group
    assert set(options("trainer")) >= {"default", "cpu", "gpu", "ddp", "ddp_cpu"}
    assert set(options("logger")) >= {"csv", "wandb", "tensorboard", "none"}


def test_defaults_are_digits_vae_csv(tmp_path):
    cfg = compose_cfg([], output_dir=tmp_path)
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.autoencoder._target_.endswith(".VAE")
    assert list(cfg.logger) == ["csv"]
    # the default latent compresses: fewer values than the 64 a digit holds
    bb = cfg.autoencoder.backbone
    assert bb.latent_channels * (cfg.data.image_size // bb.f) ** 2 < 64


def test_derived_values_are_interpolated(tmp_path):
    cfg = compose_cfg(["data.image_size=8"], output_dir=tmp_path)
    assert cfg.autoencoder.image_size == 8 and cfg.autoencoder.in_channels == cfg.data.channels


def test_unknown_option_lists_valid_ones(tmp_path):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as e:
        compose_cfg(["autoencoder=nope"], output_dir=tmp_path)
    assert "vae" in str(e.value) and "nope" in str(e.value)


def test_debug_fast_is_tiny(tmp_path):
    cfg = compose_cfg(["debug=fast"], output_dir=tmp_path)
    assert cfg.stage1.max_steps <= 10 and cfg.autoencoder.backbone.ch <= 8
