"""scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes): offline, in memory, seconds."""

from __future__ import annotations

import torch

from ldm.data.base import InMemoryImageDataModule, resize_center_crop


class DigitsDataModule(InMemoryImageDataModule):
    """UCI/scikit-learn digits, pixel values 0..16 mapped to [-1, 1], resized to `image_size`."""

    def __init__(self, image_size: int = 16, channels: int = 1, **kwargs) -> None:
        super().__init__(image_size=image_size, channels=channels, **kwargs)
        if channels != 1:
            from ldm.errors import ConfigError
            raise ConfigError(f"data.channels={channels}: the digits are grayscale, use data.channels=1")

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits

        d = load_digits()
        images = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
        return resize_center_crop(images, self.image_size), torch.tensor(d.target, dtype=torch.long)
