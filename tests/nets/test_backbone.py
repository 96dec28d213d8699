"""Encoder/decoder backbone: shapes for each downsampling factor, bad specs rejected."""

from __future__ import annotations

import pytest
import torch

from ldm.errors import ConfigError
from ldm.nets.backbone import BackboneSpec
from ldm.nets.decoder import Decoder
from ldm.nets.encoder import Encoder

BASE = dict(ch=8, ch_max=16, f=4, num_res_blocks=1, latent_channels=2, dropout=0.0)


def spec(**kw) -> BackboneSpec:
    return BackboneSpec(**{**BASE, **kw})


@pytest.mark.parametrize("f", [1, 2, 4, 8])
def test_shapes(f):
    sp = spec(f=f, latent_channels=3)
    enc, dec = Encoder(1, 6, sp), Decoder(3, 1, sp)
    x = torch.randn(2, 1, 16, 16)
    h = enc(x)
    assert h.shape == (2, 6, 16 // f, 16 // f)
    assert sp.latent_shape(16) == (3, 16 // f, 16 // f)
    assert dec(h[:, :3]).shape == x.shape


def test_channels_per_level():
    assert spec(ch=32, ch_max=64, f=8).channels == [32, 64, 64, 64]
    assert spec(f=1).levels == 1


def test_tanh_bounds_output():
    out = Decoder(2, 3, spec(ch=8, ch_max=8, f=2), tanh=True)(100 * torch.randn(2, 2, 4, 4))
    assert out.abs().max() <= 1


@pytest.mark.parametrize("kw,msg", [({"f": 3}, "power of two"), ({"ch": 64, "ch_max": 32}, "ch_max"),
                                    ({"latent_channels": 0}, "latent_channels")])
def test_bad_spec(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        spec(**kw)


def test_image_size_must_divide():
    with pytest.raises(ConfigError, match="not divisible"):
        spec(f=4).latent_shape(18)
