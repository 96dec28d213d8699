"""Convolutional ResNet encoder x -> feature map at 1/f resolution (latent-diffusion style, no attention)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ldm.nets.backbone import BackboneSpec
from ldm.nets.blocks import Downsample, ResnetBlock, group_norm


class Encoder(nn.Module):
    """conv_in -> [ResnetBlock x n, Downsample] per level -> mid blocks -> norm/SiLU/conv_out."""

    def __init__(self, in_channels: int, out_channels: int, spec: BackboneSpec) -> None:
        super().__init__()
        chs = spec.channels
        self.conv_in = nn.Conv2d(in_channels, chs[0], 3, padding=1)
        layers: list[nn.Module] = []
        prev = chs[0]
        for i, ch in enumerate(chs):
            for _ in range(spec.num_res_blocks):
                layers.append(ResnetBlock(prev, ch, spec.dropout))
                prev = ch
            if i < len(chs) - 1:
                layers.append(Downsample(ch))
        layers += [ResnetBlock(prev, prev, spec.dropout), ResnetBlock(prev, prev, spec.dropout)]
        self.body = nn.Sequential(*layers)
        self.norm_out = group_norm(prev)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(x)))))
