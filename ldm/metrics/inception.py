"""Inception-v3 features via torchmetrics, for unlabelled data (needs torch-fidelity and its weights)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ldm.errors import ConfigError


@dataclass
class Features:
    """A feature extractor without classes: `features(images) -> (N, feature_dim)`."""

    features: Callable[[torch.Tensor], torch.Tensor]
    feature_dim: int


WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # torch-fidelity's FID Inception-v3 weights (as torchmetrics uses)
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS}"


class InceptionFeatures:
    """`metrics.features` for unlabelled data: 2048-d pool features of torchmetrics' FID Inception.

    `weights_path` is a local copy of the weights (nothing is downloaded at run time; null: torch hub's cache,
    where torch-fidelity keeps them). Settings of the evaluator's training recipe (`steps`, ...: presets such as
    debug=fast set them under metrics.features) do not apply to a pretrained network and are ignored."""

    def __init__(self, weights_path: Optional[str] = None, **recipe: Any) -> None:
        from ldm.metrics.evaluator import EvaluatorFeatures

        known = set(inspect.signature(EvaluatorFeatures.__init__).parameters) - {"self"}
        unknown = sorted(set(recipe) - known)
        if unknown:
            raise ConfigError(f"metrics.features.{unknown[0]} is not a setting of metrics/features=inception (its "
                              f"settings: weights_path)")
        self.weights_path = weights_path

    def check(self, datamodule) -> None:
        """Any images will do; torch-fidelity and the weights must be there before anything trains."""
        weights_file(self.weights_path)

    def __call__(self, datamodule, data_cfg: dict, cache_dir: str | Path, device: torch.device) -> Features:
        return Features(inception_features(device, weights_file(self.weights_path)), 2048)


def weights_file(weights_path: Optional[str] = None) -> Path:
    """The Inception weights to load: `weights_path`, else torch hub's cached copy; ConfigError when torch-fidelity
    is missing or the file is not there (the preflight's check, so that it fails before training, not after)."""
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise ConfigError("metrics/features=inception needs torch-fidelity, which is not installed: pip install "
                          "torch-fidelity (it brings torchvision: use a CUDA-matched one), or use "
                          "metrics/features=evaluator on labelled data") from None
    hub = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS
    path = Path(weights_path).expanduser() if weights_path else hub
    if not path.is_file():
        where = f"metrics.features.weights_path={weights_path} is not a file" if weights_path else \
            f"its weights are not in torch hub's cache ({hub})"
        raise ConfigError(f"metrics/features=inception: {where}, and nothing is downloaded at run time: fetch "
                          f"{WEIGHTS_URL} once where there is a network, then pass metrics.features.weights_path="
                          f"<that file> (or put it at {hub})")
    return path


def inception_features(device: torch.device, weights: Optional[Path] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Images in [-1, 1] -> 2048-d pool features; grayscale is repeated to RGB."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=str(weights) if weights else None).to(device).eval()
    except Exception as e:  # missing torch-fidelity, or weights that cannot be read
        raise ConfigError(f"metrics/features=inception needs torch-fidelity and its Inception weights "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); use "
                          f"metrics/features=evaluator on labelled data") from None

    @torch.no_grad()
    def features(images: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(images), 128):
            x = images[i:i + 128].to(device)
            x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
            out.append(net(((x.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)).reshape(len(x), -1).double().cpu())
        return torch.cat(out)

    return features
