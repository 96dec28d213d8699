"""Discriminators: patch-map shapes, depth limits, joint (x, z) scores."""

from __future__ import annotations

import pytest
import torch

from ldm.errors import ConfigError
from ldm.nets.discriminators import JointDiscriminator, NLayerDiscriminator

SMALL = dict(ch=4, z_ch=8, hidden=8, unary=False, dropout=0.0, batch_norm=False)


@pytest.mark.parametrize("n_layers,side", [(1, 6), (2, 2)])
def test_patch_map_shape(n_layers, side):
    # S / 2**n_layers - 2 patches per side on S = 16
    d = NLayerDiscriminator(1, ch=8, n_layers=n_layers, batch_norm=True, image_size=16)
    assert d(torch.randn(3, 1, 16, 16)).shape == (3, 1, side, side)


def test_too_deep_for_the_image_is_a_config_error():
    with pytest.raises(ConfigError, match="n_layers <= 2"):
        NLayerDiscriminator(1, ch=8, n_layers=3, batch_norm=True, image_size=16)


def test_channels_follow_taming():
    d = NLayerDiscriminator(3, ch=8, n_layers=2, batch_norm=False)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 8), (8, 16), (16, 32), (32, 1)]


@pytest.mark.parametrize("f", [1, 2, 4])
@pytest.mark.parametrize("unary,batch_norm", [(False, False), (True, True)])
def test_joint_scores(f, unary, batch_norm):
    latent = (2, 16 // f, 16 // f)
    d = JointDiscriminator(1, 16, latent, **{**SMALL, "unary": unary, "batch_norm": batch_norm})
    scores = d(torch.randn(5, 1, 16, 16), torch.randn(5, *latent))
    assert set(scores) == ({"xz", "x", "z"} if unary else {"xz"})
    assert all(s.shape == (5,) for s in scores.values())


def test_joint_score_depends_on_both_x_and_z():
    torch.manual_seed(0)
    d = JointDiscriminator(1, 16, (2, 4, 4), **SMALL)
    x, z = torch.randn(2, 1, 16, 16), torch.randn(2, 2, 4, 4)
    s = d(x, z)["xz"]
    assert not torch.allclose(s, d(x, z.flip(0))["xz"])
    assert not torch.allclose(s, d(x.flip(0), z)["xz"])


def test_joint_rejects_unpaired_batches():
    d = JointDiscriminator(1, 16, (2, 4, 4), **SMALL)
    with pytest.raises(ValueError, match="pairs"):
        d(torch.randn(3, 1, 16, 16), torch.randn(2, 2, 4, 4))


def test_joint_rejects_incompatible_sizes():
    with pytest.raises(ConfigError, match="power-of-two multiple"):
        JointDiscriminator(1, 16, (2, 3, 3), **SMALL)
