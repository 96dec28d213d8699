"""Every autoencoder row: config composes and builds, the interface agrees, a training step moves it, reloads alone."""

from __future__ import annotations

import functools

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from ldm.autoencoders.base import Autoencoder
from ldm.errors import NoEncoderError, UserError
from ldm.utils.config import plain
from tests.autoencoders.helpers import changed, digits, fit, snapshot
from tests.conftest import compose_cfg

ROWS = ["ae", "vae", "vae_gan", "gan", "bigan", "gan_inversion"]
VAE_BACKBONE = {"ch": 16, "ch_max": 64, "f": 4, "num_res_blocks": 1, "latent_channels": 2, "dropout": 0.0}


@functools.lru_cache(maxsize=None)
def row_config(row: str, debug: bool = True) -> str:
    """The autoencoder config `train.py autoencoder=<row> [debug=fast]` composes (as YAML: cached, immutable)."""
    cfg = compose_cfg([f"autoencoder={row}"] + (["debug=fast"] if debug else [])).autoencoder
    return OmegaConf.to_yaml(cfg, resolve=True)


def build_row(row: str) -> Autoencoder:
    """The module `train.py autoencoder=<row> debug=fast` would build (tiny backbone)."""
    cfg = plain(OmegaConf.create(row_config(row)))
    cfg.pop("ckpt_path", None)
    return hydra.utils.instantiate(cfg, _recursive_=False, _convert_="all")


@pytest.mark.parametrize("row", ROWS)
def test_same_backbone_and_latent_shape_as_the_vae(row):
    cfg = OmegaConf.create(row_config(row, debug=False))
    assert dict(cfg.backbone) == VAE_BACKBONE  # the shared backbone/default.yaml
    assert build_row(row).latent_shape == (2, 4, 4)  # the VAE's default latent


@pytest.mark.parametrize("row", [r for r in ROWS if r != "gan"])
def test_interface(row):
    torch.manual_seed(0)
    ae = build_row(row).eval()
    x = digits(3)
    z = ae.encode(x)
    assert z.shape == (3, *ae.latent_shape)
    assert torch.equal(z, ae.encode_distribution(x)[0])
    assert ae.decode(z).shape == x.shape
    assert ae.sample_prior(4).shape == (4, 1, 16, 16)


def test_gan_encode_raises_the_promised_error():
    gan = build_row("gan")
    for call in (gan.encode, gan.encode_distribution, gan.reconstruct):
        with pytest.raises(NoEncoderError) as e:
            call(digits(2))
        assert isinstance(e.value, UserError)
        assert "autoencoder=bigan" in str(e.value) and "autoencoder=gan_inversion" in str(e.value)
    assert gan.decode(torch.randn(2, *gan.latent_shape)).shape == (2, 1, 16, 16)


@pytest.mark.parametrize("row", ROWS)
def test_one_training_step_moves_what_it_trains(row):
    ae = build_row(row)
    trained = {"ae": ["encoder", "decoder"], "vae": ["encoder", "decoder"], "vae_gan": ["encoder", "decoder"],
               "gan": ["generator", "discriminator"], "bigan": ["generator", "encoder", "discriminator"],
               "gan_inversion": ["generator", "discriminator"]}[row]
    before = {name: snapshot(getattr(ae, name)) for name in trained}
    trainer = fit(ae, digits(16), steps=1)
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 1
    for name in trained:
        assert changed(before[name], getattr(ae, name)), name
    assert torch.isfinite(trainer.callback_metrics["loss"])


@pytest.mark.parametrize("row", ROWS)
def test_checkpoint_loads_alone(row, tmp_path):
    ae = build_row(row)
    assert all(isinstance(v, (dict, list, int, float, bool, str, type(None))) for v in ae.hparams.values())
    path = tmp_path / f"{row}.ckpt"
    torch.save({"state_dict": ae.state_dict(), "hyper_parameters": dict(ae.hparams),
                "pytorch-lightning_version": "2.6.6"}, path)
    again = type(ae).load_from_checkpoint(path, weights_only=True).eval()
    z = torch.randn(2, *ae.latent_shape)
    assert torch.equal(again.decode(z), ae.eval().decode(z))
