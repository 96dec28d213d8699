"""Shape arithmetic of the shared encoder/decoder backbone (one place, used by both)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ldm.errors import ConfigError


@dataclass(frozen=True)
class BackboneSpec:
    """Channels per resolution level: level i has min(ch * 2**i, ch_max); log2(f) downsamplings."""

    ch: int
    ch_max: int
    f: int
    num_res_blocks: int
    latent_channels: int
    dropout: float

    def __post_init__(self) -> None:
        if self.f < 1 or self.f & (self.f - 1):
            raise ConfigError(f"backbone.f={self.f} must be a power of two (1, 2, 4, 8, ...)")
        if self.ch < 1 or self.ch_max < self.ch:
            raise ConfigError(f"backbone needs 1 <= ch <= ch_max, got ch={self.ch}, "
                              f"ch_max={self.ch_max}")
        if self.latent_channels < 1 or self.num_res_blocks < 1:
            raise ConfigError("backbone.latent_channels and num_res_blocks must be >= 1")

    @property
    def levels(self) -> int:
        return int(math.log2(self.f)) + 1

    @property
    def channels(self) -> list[int]:
        return [min(self.ch * 2 ** i, self.ch_max) for i in range(self.levels)]

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        if image_size % self.f:
            raise ConfigError(f"data.image_size={image_size} is not divisible by backbone.f={self.f}: "
                              f"choose sizes whose ratio is a whole number")
        return (self.latent_channels, image_size // self.f, image_size // self.f)
