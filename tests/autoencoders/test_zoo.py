"""Every autoencoder row (discovered from conf/autoencoder/): the config composes and builds, the interface agrees,
a training step moves what its optimizers own, the module reloads alone."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ldm.autoencoders.base import Autoencoder, LatentModel
from ldm.errors import NoEncoderError, UserError
from tests.autoencoders.helpers import ROWS, adam_steps, build_row, changed, digits, fit, row_config, snapshot

VAE_BACKBONE = {"ch": 16, "ch_max": 64, "f": 4, "num_res_blocks": 1, "latent_channels": 2, "dropout": 0.0}
TRAINED = [r for r in ROWS if r != "identity"]  # identity has nothing to train: pixel space is its latent


def test_rows_are_discovered():
    assert set(ROWS) >= {"identity", "ae", "vae", "vae_gan", "gan", "bigan", "gan_inversion"}


@pytest.mark.parametrize("row", TRAINED)
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


def test_rows_that_encode_are_autoencoders_the_gan_is_not():
    """The capability is the type: latent diffusion takes `Autoencoder`s; the plain GAN is only a `LatentModel`,
    and the error it gives names the two rows that add an encoder."""
    encoding = {row for row in ROWS if isinstance(build_row(row), Autoencoder)}
    assert encoding == set(ROWS) - {"gan"}
    gan = build_row("gan")
    assert isinstance(gan, LatentModel) and not hasattr(gan, "encode")
    err = type(gan).missing_encoder()
    assert isinstance(err, NoEncoderError) and isinstance(err, UserError)
    assert "autoencoder=bigan" in str(err) and "autoencoder=gan_inversion" in str(err)
    assert gan.decode(torch.randn(2, *gan.latent_shape)).shape == (2, 1, 16, 16)


@pytest.mark.parametrize("row", TRAINED)
def test_one_training_step_moves_what_its_optimizers_own(row):
    """After one batch, every optimizer that stepped has moved each of its parameters' module, and one did step."""
    ae = build_row(row)
    before = snapshot(ae)
    trainer = fit(ae, digits(16), steps=1)
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 1
    stepped = [opt for opt in trainer.optimizers if adam_steps(opt) > 0]
    assert stepped
    names = {id(p): n for n, p in ae.named_parameters()}
    for opt in stepped:
        owned = [names[id(p)] for group in opt.param_groups for p in group["params"]]
        moved = [n for n in owned if not torch.equal(before[n], dict(ae.named_parameters())[n])]
        assert len(moved) > len(owned) // 2, (row, len(moved), len(owned))
    assert changed(before, ae) and torch.isfinite(trainer.callback_metrics["loss"])


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
