"""Feature-based distribution metrics: FID, KID (torchmetrics) and PRDC, on features computed once per image set."""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance


class GivenFeatures(nn.Module):
    """torchmetrics' `feature=` module for features computed beforehand: FID and KID see them unchanged, so
    each image set is embedded once however many metrics read it."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al., 2020) via the `prdc` package."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its sample counts
        out = compute_prdc(real_features=np.asarray(real, np.float64), fake_features=np.asarray(fake, np.float64),
                           nearest_k=k)
    return {key: float(v) for key, v in out.items()}


def fid_between(feats: torch.Tensor, reference: torch.Tensor) -> float:
    """FID between two feature sets (torchmetrics, given features), e.g. samples against held-out images."""
    fid = FrechetInceptionDistance(feature=GivenFeatures(feats.shape[1]), normalize=False,
                                   input_img_size=(feats.shape[1],), sync_on_compute=False)
    fid.update(reference, real=True)
    fid.update(feats, real=False)
    return float(fid.compute())


class FeatureMetrics:
    """FID / KID / PRDC of image sets against one fixed real reference set, on features of `features`.

    `embed(images)` gives an image set's (N, D) features once, from a tensor or from an iterable of image
    batches (a split read batch by batch need not fit in memory); every metric then takes features.
    """

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor], num_features: int,
                 reference: torch.Tensor | Iterable[torch.Tensor], *, kid_subsets: int, kid_subset_size: int,
                 prdc_k: int) -> None:
        self.features, self.num_features, self.prdc_k = features, num_features, prdc_k
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.real = self.embed(reference)
        # sync_on_compute=False: under DDP only rank 0 evaluates, so there is no one to gather from
        self._fid = FrechetInceptionDistance(feature=GivenFeatures(num_features), reset_real_features=False,
                                             normalize=False, input_img_size=(num_features,), sync_on_compute=False)
        self._fid.update(self.real, real=True)
        self._kid: dict[int, KernelInceptionDistance] = {}

    def embed(self, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 512) -> torch.Tensor:
        """(N, num_features) float64 features of a tensor of images or of an iterable of image batches."""
        if isinstance(images, torch.Tensor):
            whole = images
            images = (whole[i:i + batch_size] for i in range(0, len(whole), batch_size))
        chunks = [self.features(x).double().cpu() for x in images]
        return torch.cat(chunks) if chunks else torch.empty(0, self.num_features, dtype=torch.float64)

    def fid(self, feats: torch.Tensor) -> float:
        self._fid.reset()  # keeps the real features
        self._fid.update(feats, real=False)
        return float(self._fid.compute())

    def kid_size(self, n: int) -> int:
        """KID's subset size: at most half of either set, so the subsets differ and their std means something
        (a subset the size of the set is the whole set every time: std 0 whatever the model)."""
        return max(2, min(self.kid_subset_size, n // 2, len(self.real) // 2))

    def kid(self, feats: torch.Tensor) -> tuple[float, float]:
        """(mean, std) over random subsets of `kid_size(n)` images (unbiased MMD^2 per subset)."""
        size = self.kid_size(len(feats))
        if size not in self._kid:
            with warnings.catch_warnings():  # "will save all extracted features": intended, the sets are small
                warnings.simplefilter("ignore")
                kid = KernelInceptionDistance(feature=GivenFeatures(self.num_features), subsets=self.kid_subsets,
                                              subset_size=size, reset_real_features=False, normalize=False,
                                              sync_on_compute=False)
            kid.update(self.real, real=True)
            self._kid[size] = kid
        kid = self._kid[size]
        kid.reset()
        kid.update(feats, real=False)
        with torch.random.fork_rng():  # same subsets every evaluation, global RNG untouched
            torch.manual_seed(0)
            mean, std = kid.compute()
        return float(mean), float(std)

    def prdc(self, feats: torch.Tensor, seed: int = 0) -> dict[str, float]:
        """PRDC against an equal number of real reference images (a random subset of the reference when it is
        larger): with 8x more real than fake points recall saturates near 1 for any model."""
        real = self.real
        if len(real) > len(feats):
            g = torch.Generator().manual_seed(seed)
            real = real[torch.randperm(len(real), generator=g)[:len(feats)]]
        k = max(1, min(self.prdc_k, len(feats) - 2, len(real) - 2))  # prdc takes the (k+1)-th smallest of n
        return {**prdc(real.numpy(), feats.double().numpy(), k), "prdc_k": k}

    def all(self, feats: torch.Tensor) -> dict[str, float]:
        kid, kid_std = self.kid(feats)
        return {"fid": self.fid(feats), "kid": kid, "kid_std": kid_std, **self.prdc(feats)}
