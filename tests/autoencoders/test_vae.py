"""VAE: the autoencoder interface, loss composition, and a tiny overfit."""

from __future__ import annotations

import pytest
import torch

from ldm.autoencoders.vae import VAE
from ldm.losses import gaussian_kl
from tests.autoencoders.helpers import BACKBONE, row_kwargs

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-3}


def make_vae(**kw):
    return VAE(**row_kwargs("vae", **{"optimizer": ADAM, **kw}))


@pytest.mark.parametrize("f", [1, 2, 4])
def test_interface_shapes(f):
    vae = make_vae(backbone={**BACKBONE, "f": f})
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert vae.latent_shape == (2, 16 // f, 16 // f)
    mean, std = vae.encode_distribution(x)
    assert mean.shape == std.shape == (3, *vae.latent_shape) and (std > 0).all()
    assert torch.equal(vae.encode(x), mean)  # deterministic encode = posterior mean
    assert vae.decode(vae.encode(x)).shape == x.shape
    assert vae.sample_prior(4).shape == (4, 1, 16, 16)


def test_loss_is_recon_plus_weighted_kl():
    torch.manual_seed(0)
    vae = make_vae(kl_weight=0.5)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    terms = vae.losses(x, sample=False)
    mean, logvar = vae.posterior(x)
    rec = (vae.decode(mean) - x).abs().flatten(1).sum(1).mean()
    assert torch.allclose(terms["rec"], rec)
    assert torch.allclose(terms["kl"], gaussian_kl(mean, logvar).mean())
    assert torch.allclose(terms["loss"], rec + 0.5 * terms["kl"])


def test_hparams_are_plain_and_reload(tmp_path):
    vae = make_vae()
    assert vae.hparams.backbone == BACKBONE and isinstance(vae.hparams.optimizer, dict)
    path = tmp_path / "vae.ckpt"
    torch.save({"state_dict": vae.state_dict(), "hyper_parameters": dict(vae.hparams),
                "pytorch-lightning_version": "2.6.6"}, path)
    again = VAE.load_from_checkpoint(path, weights_only=True)
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(again.encode(x), vae.encode(x))


@pytest.mark.slow
def test_tiny_overfit_drops_loss_tenfold():
    """One fixed batch of 16 digits, 150 Adam steps: the loss falls by at least 10x (measured ~25x)."""
    from ldm.data.digits import DigitsDataModule

    torch.manual_seed(0)
    dm = DigitsDataModule(image_size=16)
    dm.setup()
    x = dm.split("train").images[:16]
    vae = make_vae()
    opt = vae.configure_optimizers()
    first = None
    for _ in range(150):
        loss = vae.losses(x)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = vae.losses(x, sample=False)["loss"].item()
    assert final < first / 10, (first, final)
