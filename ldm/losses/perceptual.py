"""Perceptual losses for the VAE-GAN row: feature distances in a frozen network.

LPIPS (Zhang et al., 2018) needs ImageNet-pretrained VGG/AlexNet weights and its learned linear layers, which
cannot be downloaded here. `DataFeatureLoss` is the offline stand-in: the LPIPS recipe (unit-normalise each
layer's activations over channels, squared difference, mean over positions, sum over layers) on a small CNN trained
on the data's own labels. It is not LPIPS: its features know this data's classes, not ImageNet's textures, and it
has no learned per-channel weights. It is deliberately a different network from the evaluator that computes the
FIDs (another seed and width: a cache entry of its own), so the row cannot lower its FID by matching the measuring
network's features. `LPIPSLoss` uses the `lpips` package where a user has it and its weights locally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ldm.errors import ConfigError


def _normalise(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


class FeatureDistance(nn.Module):
    """sum over the conv blocks of `net.body` of mean_positions ||n(f(x_hat)) - n(f(x))||^2, n = unit norm over
    channels, summed per image scale: returned per image (N,) times the pixel count, so that with weight 1 it is
    on the scale of a per-image-summed pixel loss."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.taps = [i for i, m in enumerate(net.body) if isinstance(m, nn.SiLU)]  # after each block's activation

    def train(self, mode: bool = True) -> "FeatureDistance":
        super().train(mode)
        self.net.eval()  # frozen: never in training mode (dropout, norms)
        return self

    def per_image(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), device=x.device, dtype=x.dtype)
        a, b = x_hat, x
        for i, layer in enumerate(self.net.body):
            a, b = layer(a), layer(b)
            if i in self.taps:
                out = out + (_normalise(a) - _normalise(b)).pow(2).sum(1).mean((1, 2))
        return out * x[0].numel()

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.per_image(x_hat, x).mean()


class DataFeatureLoss(FeatureDistance):
    """FeatureDistance in a ConvClassifier trained on the data's labels (cached like the evaluator, under its own
    key: another `seed` and `width` than conf/metrics/features/evaluator.yaml)."""

    def __init__(self, *, data: dict, cache_dir: str, steps: int, batch_size: int, lr: float, width: int,
                 feature_dim: int, seed: int) -> None:
        from ldm.metrics.evaluator import load_or_train
        from ldm.utils.config import build, plain

        data = plain(data)
        datamodule = build(data)
        datamodule.setup()
        recipe = dict(steps=steps, batch_size=batch_size, lr=lr, width=width, feature_dim=feature_dim, seed=seed)
        evaluator = load_or_train(datamodule, data, recipe, cache_dir)
        super().__init__(evaluator.net)
        self.accuracy = evaluator.accuracy


class LPIPSLoss(nn.Module):
    """LPIPS from the `lpips` package with weights a user has locally (`weights_path`: the package's linear-layer
    file; the backbone's pretrained weights must be in torch's hub cache): per image, times the pixel count."""

    def __init__(self, net: str = "vgg", weights_path: Optional[str] = None) -> None:
        super().__init__()
        try:
            import lpips
        except ImportError as e:
            raise ConfigError("autoencoder.perceptual_loss=LPIPS needs the `lpips` package (pip install lpips) and "
                              "its weights on disk; offline, use ldm.losses.perceptual.DataFeatureLoss") from e
        if weights_path is not None and not Path(weights_path).is_file():
            raise ConfigError(f"LPIPS weights_path={weights_path} is not a file")
        self.lpips = lpips.LPIPS(net=net, model_path=weights_path, verbose=False).eval().requires_grad_(False)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (self.lpips(x_hat, x).flatten() * x[0].numel()).mean()
