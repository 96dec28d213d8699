"""Feature-based distribution metrics on the evaluator's features: FID, KID (torchmetrics) and PRDC."""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance


class FeatureModule(nn.Module):
    """Adapts `features(images) -> (N, D)` to torchmetrics' custom `feature=` interface."""

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], num_features: int) -> None:
        super().__init__()
        self._features, self.num_features = features, num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(images)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al., 2020) via the `prdc` package."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its sample counts
        out = compute_prdc(real_features=np.asarray(real, np.float64), fake_features=np.asarray(fake, np.float64),
                           nearest_k=k)
    return {key: float(v) for key, v in out.items()}


class FeatureMetrics:
    """FID / KID / PRDC of image sets against one fixed real reference set (features computed once)."""

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], num_features: int,
                 reference: torch.Tensor, kid_subsets: int = 100, kid_subset_size: int = 1000, prdc_k: int = 5):
        self.features, self.prdc_k = features, prdc_k
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.module = FeatureModule(features, num_features)
        self.reference = reference
        self.real_features = features(reference).double()
        # sync_on_compute=False: under DDP only rank 0 evaluates, so there is no one to gather from
        self._fid = FrechetInceptionDistance(feature=self.module, reset_real_features=False, normalize=False,
                                             input_img_size=tuple(reference.shape[1:]), sync_on_compute=False)
        self._fid.update(reference, real=True)
        self._kid: dict[int, KernelInceptionDistance] = {}

    def fid(self, images: torch.Tensor) -> float:
        self._fid.reset()  # keeps the real features
        self._fid.update(images, real=False)
        return float(self._fid.compute())

    def kid(self, images: torch.Tensor) -> tuple[float, float]:
        """(mean, std) over random subsets of min(kid_subset_size, n) images."""
        size = min(self.kid_subset_size, len(images), len(self.reference))
        if size not in self._kid:
            with warnings.catch_warnings():  # "will save all extracted features": intended, the sets are small
                warnings.simplefilter("ignore")
                kid = KernelInceptionDistance(feature=self.module, subsets=self.kid_subsets, subset_size=size,
                                              reset_real_features=False, normalize=False, sync_on_compute=False)
            kid.update(self.reference, real=True)
            self._kid[size] = kid
        kid = self._kid[size]
        kid.reset()
        kid.update(images, real=False)
        with torch.random.fork_rng():  # same subsets every evaluation, global RNG untouched
            torch.manual_seed(0)
            mean, std = kid.compute()
        return float(mean), float(std)

    def prdc_k_for(self, n: int) -> int:
        """k clamped to what both sets allow: the prdc package takes the (k+1)-th smallest of n distances."""
        return max(1, min(self.prdc_k, n - 2, len(self.reference) - 2))

    def prdc(self, images: torch.Tensor) -> dict[str, float]:
        k = self.prdc_k_for(len(images))
        return {**prdc(self.real_features.numpy(), self.features(images).double().numpy(), k), "prdc_k": k}

    def all(self, images: torch.Tensor) -> dict[str, float]:
        kid, kid_std = self.kid(images)
        return {"fid": self.fid(images), "kid": kid, "kid_std": kid_std, **self.prdc(images)}
