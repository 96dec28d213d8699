"""UNet noise predictor for (latent) diffusion (Ho et al., 2020; Dhariwal & Nichol, 2021; Rombach et al., 2022)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ldm.errors import ConfigError
from ldm.nets.blocks import group_norm


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, (N,) -> (N, dim) (Vaswani et al., 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimeResBlock(nn.Module):
    """ResNet block with scale-shift conditioning on the time (and class) embedding: norm(h)(1 + s) + b.
    `forward` takes the embedding after its SiLU (computed once per UNet call, not once per block)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class SelfAttention(nn.Module):
    """Multi-head self-attention over spatial positions (torch SDPA), residual.

    The q/k/v and output projections are stored as 1x1 convolutions (the checkpoint format) but applied as
    matmuls on the (n, hw, c) token layout: q, k and v then reach SDPA with a contiguous last dimension, which
    lets CPU SDPA take its fused kernel instead of the bmm + softmax fallback (benchmarks/RESULTS.md)."""

    def __init__(self, ch: int, num_heads: int = 4) -> None:
        super().__init__()
        self.heads = num_heads if ch % num_heads == 0 else 1
        self.norm = group_norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_init(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)                                   # (n, hw, c)
        qkv = F.linear(tokens, self.qkv.weight.view(3 * c, c), self.qkv.bias)               # (n, hw, 3c)
        q, k, v = qkv.view(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (n, heads, hw, d)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, h * w, c)
        out = F.linear(out, self.proj.weight.view(c, c), self.proj.bias)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


class Level(nn.Module):
    """Residual blocks (+ attention) at one resolution, taking the time embedding."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x, emb) if isinstance(b, TimeResBlock) else b(x)
        return x


class UNet(nn.Module):
    """eps/x0/v predictor: channel multipliers per level, attention at the downsampling factors in
    `attention_resolutions` (1 = input resolution), skip connections, optional class embedding whose
    extra index `num_classes` is the null class for classifier-free guidance."""

    def __init__(self, in_channels: int, *, model_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                 attention_resolutions: Sequence[int], num_heads: int, dropout: float, num_classes: int = 0,
                 out_channels: Optional[int] = None) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.num_classes, self.levels = num_classes, len(channel_mult)
        emb_dim = 4 * model_channels
        self.model_channels = model_channels
        self.time_mlp = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None

        chs = [model_channels * m for m in channel_mult]
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skip_chs, prev = [model_channels], model_channels
        for i, ch in enumerate(chs):
            attn = 2 ** i in attention_resolutions
            for _ in range(num_res_blocks):
                blocks = [TimeResBlock(prev, ch, emb_dim, dropout)] + ([SelfAttention(ch, num_heads)] if attn else [])
                self.down.append(Level(blocks))
                prev = ch
                skip_chs.append(ch)
            if i < len(chs) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_chs.append(ch)
        self.mid = Level([TimeResBlock(prev, prev, emb_dim, dropout), SelfAttention(prev, num_heads),
                          TimeResBlock(prev, prev, emb_dim, dropout)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, ch in reversed(list(enumerate(chs))):
            attn = 2 ** i in attention_resolutions
            for _ in range(num_res_blocks + 1):
                blocks = [TimeResBlock(prev + skip_chs.pop(), ch, emb_dim, dropout)]
                self.up.append(Level(blocks + ([SelfAttention(ch, num_heads)] if attn else [])))
                prev = ch
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.num_res_blocks = num_res_blocks
        self.norm_out = group_norm(prev)
        self.conv_out = zero_init(nn.Conv2d(prev, out_channels, 3, padding=1))

    def check_input(self, size: int) -> None:
        if size % 2 ** (self.levels - 1):
            raise ConfigError(f"UNet with {self.levels} levels needs a latent size divisible by "
                              f"{2 ** (self.levels - 1)}, got {size}: use fewer channel_mult entries")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.model_channels))
        if self.class_emb is not None:
            y = torch.full((len(x),), self.num_classes, device=x.device, dtype=torch.long) if y is None else y
            emb = emb + self.class_emb(y)
        emb = F.silu(emb)  # every block's projection starts with it
        h = self.conv_in(x)
        skips = [h]
        blocks = iter(self.down)
        for i in range(self.levels):
            for _ in range(self.num_res_blocks):
                h = next(blocks)(h, emb)
                skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid(h, emb)
        blocks = iter(self.up)
        for j in range(self.levels):
            for _ in range(self.num_res_blocks + 1):
                h = next(blocks)(torch.cat([h, skips.pop()], dim=1), emb)
            if j < self.levels - 1:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
