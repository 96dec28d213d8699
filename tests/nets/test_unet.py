"""The UNet's fast paths compute the textbook function: attention as matmuls on tokens equals the
1x1-convolution formulation its weights are stored in."""

from __future__ import annotations

import torch

from ldm.nets.unet import SelfAttention, UNet


def reference_attention(m: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Multi-head attention written with the 1x1 convolutions and explicit softmax(q k^T / sqrt(d)) v."""
    n, c, h, w = x.shape
    d = c // m.heads
    qkv = m.qkv(m.norm(x)).reshape(n, 3, m.heads, d, h * w)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]                        # (n, heads, d, hw)
    weights = torch.softmax(q.transpose(-1, -2) @ k / d ** 0.5, dim=-1)  # (n, heads, hw, hw)
    out = (weights @ v.transpose(-1, -2)).transpose(-1, -2).reshape(n, c, h, w)
    return x + m.proj(out)


def test_attention_equals_the_convolution_formulation():
    torch.manual_seed(0)
    m = SelfAttention(32, num_heads=4)
    torch.nn.init.normal_(m.proj.weight, std=0.1)  # zero-initialised: the residual would hide any error
    x = torch.randn(3, 32, 4, 4)
    assert torch.allclose(m(x), reference_attention(m, x), atol=1e-5)


def test_unet_is_finite_and_keeps_the_shape():
    torch.manual_seed(0)
    net = UNet(2, model_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[2], num_heads=4,
               dropout=0.0, num_classes=3)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(5, 2, 8, 8), torch.randint(0, 1000, (5,))
    out = net(x, t, torch.tensor([0, 1, 2, 3, 3]))  # 3 = the null class of classifier-free guidance
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, net(x, t))  # the class changes the prediction (None = the null class)
