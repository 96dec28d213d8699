"""Inception-v3 features via torchmetrics, for unlabelled data (needs torch-fidelity and its weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ldm.errors import ConfigError


@dataclass
class Features:
    """A feature extractor without classes: `features(images) -> (N, feature_dim)`."""

    features: Callable[[torch.Tensor], torch.Tensor]
    feature_dim: int


class InceptionFeatures:
    """`metrics.features` for unlabelled data: 2048-d pool features of torchmetrics' FID Inception."""

    def check(self, datamodule) -> None:
        """Any images will do."""

    def __call__(self, datamodule, data_cfg: dict, cache_dir: str | Path, device: torch.device) -> Features:
        return Features(inception_features(device), 2048)


def inception_features(device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images in [-1, 1] -> 2048-d pool features; grayscale is repeated to RGB."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"]).to(device).eval()
    except Exception as e:  # missing torch-fidelity, or weights that cannot be downloaded
        raise ConfigError(f"metrics/features=inception needs torch-fidelity and its Inception weights "
                          f"({type(e).__name__}); use metrics/features=evaluator on labelled data") from None

    @torch.no_grad()
    def features(images: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(images), 128):
            x = images[i:i + 128].to(device)
            x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
            out.append(net(((x.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)).reshape(len(x), -1).double().cpu())
        return torch.cat(out)

    return features
