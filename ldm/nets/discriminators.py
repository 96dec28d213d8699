"""Discriminators (plain nn.Modules): a PatchGAN for images, a joint D(x, z) for BiGAN, a time-conditioned
D(x_{t-1}, x_t, t) for Denoising Diffusion GANs."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ldm.errors import ConfigError


def _down(in_ch: int, out_ch: int, norm: bool) -> list[nn.Module]:
    """4x4 stride-2 conv (+ BatchNorm) + LeakyReLU(0.2): the pix2pix / taming discriminator unit."""
    return [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=not norm),
            *([nn.BatchNorm2d(out_ch)] if norm else []), nn.LeakyReLU(0.2, inplace=True)]


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al., 2017) as in taming-transformers: one logit per image patch.

    `n_layers` stride-2 convs, then a stride-1 4x4 conv and a 4x4 conv to one channel; each 4x4/stride-1
    conv trims one pixel, so an image of side S gives S / 2**n_layers - 2 patches per side (16 -> 2x2 at
    n_layers=2, whose receptive field already covers the whole 16x16 image).
    """

    def __init__(self, in_channels: int, *, ch: int, n_layers: int, batch_norm: bool,
                 image_size: int | None = None) -> None:
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"discriminator n_layers={n_layers} must be >= 1")
        if image_size is not None and image_size // 2 ** n_layers < 3:
            raise ConfigError(f"discriminator n_layers={n_layers} is too deep for {image_size}x{image_size} images: "
                              f"use n_layers <= {int(math.log2(image_size)) - 2}")
        chs = [ch * min(2 ** i, 8) for i in range(n_layers + 1)]
        layers = _down(in_channels, chs[0], norm=False)  # no norm on the input layer, as in pix2pix
        for i in range(1, n_layers):
            layers += _down(chs[i - 1], chs[i], batch_norm)
        layers += [nn.Conv2d(chs[n_layers - 1], chs[n_layers], 4, padding=1, bias=not batch_norm),
                   *([nn.BatchNorm2d(chs[n_layers])] if batch_norm else []), nn.LeakyReLU(0.2, inplace=True),
                   nn.Conv2d(chs[n_layers], 1, 4, padding=1)]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> patch logits (N, 1, h, w)."""
        return self.main(x)

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the input square one patch logit sees (70 for pix2pix's n_layers=3)."""
        return receptive_field(self.main)


def receptive_field(net: nn.Module) -> int:
    """Receptive field of a stack of convolutions, r = (r - 1) * stride + kernel from the output back."""
    r = 1
    for m in reversed([m for m in net.modules() if isinstance(m, nn.Conv2d)]):
        r = (r - 1) * m.stride[0] + m.kernel_size[0]
    return r


class JointDiscriminator(nn.Module):
    """D(x, z) of BiGAN / ALI (Donahue et al., 2017; Dumoulin et al., 2017): x branch, z branch, joint head.

    The x branch downsamples to the latent's (h, w), so the joint head sees x features and z features
    position by position before a linear layer scores the whole pair. `unary=True` adds BigBiGAN's
    separate x-only and z-only scores (Donahue & Simonyan, 2019). `batch_norm` normalises the x branch
    (real and fake pairs go through separate calls, so as in DCGAN each batch is of one kind); on the
    digits it kept G from collapsing to one mode, which the dropout-only variant did within 50 steps.
    Returns a dict of scores (N,): "xz", and "x", "z" when unary.
    """

    def __init__(self, in_channels: int, image_size: int, latent_shape: tuple[int, int, int], *, ch: int,
                 z_ch: int, hidden: int, unary: bool, dropout: float, batch_norm: bool) -> None:
        super().__init__()
        c, h, w = latent_shape
        n_down = int(math.log2(image_size // h)) if h and image_size % h == 0 else -1
        if n_down < 0 or image_size != h * 2 ** n_down:
            raise ConfigError(f"image size {image_size} must be a power-of-two multiple of the latent size {h}")
        act = [nn.LeakyReLU(0.2, inplace=True), nn.Dropout(dropout)]
        x_layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1), *act]
        for i in range(n_down):
            x_layers += [nn.Conv2d(ch * 2 ** i, ch * 2 ** (i + 1), 4, stride=2, padding=1),
                         *([nn.BatchNorm2d(ch * 2 ** (i + 1))] if batch_norm else []), *act]
        cx = ch * 2 ** n_down
        self.x_branch = nn.Sequential(*x_layers)
        self.z_branch = nn.Sequential(nn.Conv2d(c, z_ch, 1), *act, nn.Conv2d(z_ch, z_ch, 1), *act)
        self.joint = nn.Sequential(nn.Conv2d(cx + z_ch, hidden, 1), *act, nn.Flatten(), nn.Linear(hidden * h * w, 1))
        self.unary = unary
        if unary:
            self.x_head = nn.Sequential(nn.Flatten(), nn.Linear(cx * h * w, 1))
            self.z_head = nn.Sequential(nn.Flatten(), nn.Linear(z_ch * h * w, 1))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[0] != z.shape[0]:
            raise ValueError(f"D(x, z) needs pairs: batch {x.shape[0]} of x vs {z.shape[0]} of z")
        fx, fz = self.x_branch(x), self.z_branch(z)
        scores = {"xz": self.joint(torch.cat([fx, fz], dim=1)).squeeze(1)}
        if self.unary:
            scores.update(x=self.x_head(fx).squeeze(1), z=self.z_head(fz).squeeze(1))
        return scores


class TimeDiscriminator(nn.Module):
    """D(x_{t-1}, x_t, t) of a Denoising Diffusion GAN (Xiao et al., 2022): is x_{t-1} a real step back from x_t?

    The two latents are stacked on channels; the time step enters as a sinusoidal embedding added to every
    block's activations (their discriminator adds a time embedding per block likewise); 3x3 convolutions with
    LeakyReLU(0.2), one stride-2 block per `downsample` (latents are small: 4x4 to 16x16), a sum over
    positions, one logit per sample."""

    def __init__(self, in_channels: int, *, ch: int = 64, blocks: int = 3, downsample: int = 1) -> None:
        super().__init__()
        self.ch = ch
        self.time = nn.Sequential(nn.Linear(ch, ch), nn.LeakyReLU(0.2))
        self.conv_in = nn.Conv2d(2 * in_channels, ch, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(ch, ch, 3, stride=2 if i < downsample else 1, padding=1)
                                    for i in range(blocks))
        self.t_proj = nn.ModuleList(nn.Linear(ch, ch) for _ in range(blocks))
        self.out = nn.Linear(ch, 1)

    def forward(self, x_prev: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        from ldm.nets.unet import timestep_embedding

        emb = self.time(timestep_embedding(t, self.ch))
        h = F.leaky_relu(self.conv_in(torch.cat([x_prev, x_t], 1)), 0.2)
        for conv, proj in zip(self.blocks, self.t_proj):
            h = F.leaky_relu(conv(h + proj(emb)[:, :, None, None]), 0.2)
        return self.out(h.sum((2, 3)))
