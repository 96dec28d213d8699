"""Convolutional ResNet decoder z -> x, the encoder's mirror image."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ldm.nets.backbone import BackboneSpec
from ldm.nets.blocks import ResnetBlock, Upsample, group_norm


class Decoder(nn.Module):
    """conv_in -> mid blocks -> [ResnetBlock x n, Upsample] per level (reversed) -> norm/SiLU/conv_out.

    `tanh=True` keeps outputs in [-1, 1] (GAN generators); identity by default, so
    reconstruction losses see unsquashed values as in the latent-diffusion autoencoder.
    """

    def __init__(self, in_channels: int, out_channels: int, spec: BackboneSpec, tanh: bool = False) -> None:
        super().__init__()
        chs = list(reversed(spec.channels))
        self.conv_in = nn.Conv2d(in_channels, chs[0], 3, padding=1)
        layers: list[nn.Module] = [ResnetBlock(chs[0], chs[0], spec.dropout), ResnetBlock(chs[0], chs[0], spec.dropout)]
        prev = chs[0]
        for i, ch in enumerate(chs):
            for _ in range(spec.num_res_blocks):
                layers.append(ResnetBlock(prev, ch, spec.dropout))
                prev = ch
            if i < len(chs) - 1:
                layers.append(Upsample(ch))
        self.body = nn.Sequential(*layers)
        self.norm_out = group_norm(prev)
        self.conv_out = nn.Conv2d(prev, out_channels, 3, padding=1)
        self.tanh = tanh

    @property
    def last_layer(self) -> nn.Parameter:
        """Weight of the final conv: where the VAE-GAN's adaptive weight takes its gradient norms."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_out(F.silu(self.norm_out(self.body(self.conv_in(z)))))
        return torch.tanh(x) if self.tanh else x
