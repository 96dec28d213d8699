"""Exponential moving average of network weights, with decay warm-up."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Shadow copy of a network; decay_n = min(decay, (1 + n) / (10 + n)) after n updates.

    The warm-up (as in latent diffusion's LitEma) makes early averages follow the weights closely;
    a fixed 0.999 from step 0 kept random-init weights in short runs and ruined them (docs/design.md, lessons).
    """

    def __init__(self, net: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        d = self.current_decay()
        # one multi-tensor call, the same arithmetic as e.lerp_(p, 1 - d) per parameter (bit-identical; tested)
        torch._foreach_lerp_(list(self.net.parameters()), [p.detach() for p in net.parameters()], 1 - d)
        for e, b in zip(self.net.buffers(), net.buffers()):
            e.copy_(b)
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)
