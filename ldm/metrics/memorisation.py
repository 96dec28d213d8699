"""Memorisation: do generated samples copy training images?

For each generated sample and, as the reference, each held-out real image: the distance to its nearest and
second-nearest training image (in pixels and in the evaluator's features). Two rules flag a copy:

- **calibrated threshold**: closer to a training image than the `quantile` (default 1 %) of the held-out
  images' nearest-train distances. Held-out images are not copies by construction, so their copy rate is the
  quantile itself, and a generator's rate far above it means samples sit closer to training images than new
  real images do.
- **ratio rule**: nearest / second-nearest distance < 1/3 (Yoon et al., 2023, "Diffusion probabilistic models
  generalize when they fail to memorize", and Gu et al., 2023, "On memorization in diffusion models", both in
  pixel space): a sample that is much closer to one training image than to any other is a near-copy of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

RATIO = 1 / 3


@torch.no_grad()
def nearest_two(queries: torch.Tensor, reference: torch.Tensor, block: int = 1024) -> tuple[torch.Tensor, ...]:
    """(d1, d2, index of the nearest) from each query row to the reference rows, Euclidean, flattened."""
    q, r = queries.flatten(1).double(), reference.flatten(1).double()
    if len(r) < 2:
        raise ValueError("memorisation needs at least 2 reference (training) images")
    r2 = r.pow(2).sum(1)
    d1, d2, idx = [], [], []
    for i in range(0, len(q), block):
        qb = q[i:i + block]
        dist = (qb.pow(2).sum(1, keepdim=True) - 2 * qb @ r.T + r2).clamp_min(0)  # squared
        top = dist.topk(2, dim=1, largest=False)
        d1.append(top.values[:, 0].sqrt())
        d2.append(top.values[:, 1].sqrt())
        idx.append(top.indices[:, 0])
    return torch.cat(d1), torch.cat(d2), torch.cat(idx)


def copy_metrics(gen: torch.Tensor, heldout: torch.Tensor, train: torch.Tensor, quantile: float = 0.01,
                 prefix: str = "") -> tuple[dict[str, float], dict]:
    """Copy rates of `gen` and of `heldout` against `train` (see the module docstring) and the nearest-neighbour
    distances' medians; also returns the raw nearest pairs of `gen` for the figure."""
    g1, g2, gi = nearest_two(gen, train)
    h1, h2, _ = nearest_two(heldout, train)
    threshold = float(h1.quantile(quantile))
    out = {
        f"{prefix}copy_rate": float((g1 < threshold).double().mean()),
        f"{prefix}copy_rate_heldout": float((h1 < threshold).double().mean()),
        f"{prefix}ratio_rate": float((g1 < RATIO * g2).double().mean()),
        f"{prefix}ratio_rate_heldout": float((h1 < RATIO * h2).double().mean()),
        f"{prefix}nn_median": float(g1.median()),
        f"{prefix}nn_median_heldout": float(h1.median()),
        f"{prefix}threshold": threshold,
    }
    return out, {"d1": g1, "index": gi}


def closest_pairs_figure(gen: torch.Tensor, train: torch.Tensor, pairs: dict, path: Path, k: int = 8,
                         title: Optional[str] = None) -> None:
    """The k generated samples closest to a training image, each above its nearest training image."""
    from ldm.utils.images import save_grid

    k = min(k, len(gen))
    order = pairs["d1"].argsort()[:k]
    top = torch.stack([gen[i] for i in order])
    bottom = torch.stack([train[pairs["index"][i]] for i in order])
    save_grid(torch.cat([top, bottom]), path, nrow=k, rows=["sample", "nearest train"],
              cols=[f"{float(pairs['d1'][i]):.2f}" for i in order],
              title=title or "generated samples closest to a training image (pixel distance above each)")


def memorisation_metrics(gen: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor, out_dir: Path,
                         feats: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
                         quantile: float = 0.01) -> dict[str, float]:
    """mem/* in pixels (and mem/feat_* in the evaluator's features when `feats` = (gen, train, heldout) features),
    plus memorisation.png with the closest sample / training-image pairs."""
    m, pairs = copy_metrics(gen, heldout, train, quantile, prefix="mem/")
    closest_pairs_figure(gen, train, pairs, Path(out_dir) / "memorisation.png")
    if feats is not None:
        fm, _ = copy_metrics(feats[0], feats[2], feats[1], quantile, prefix="mem/feat_")
        m.update(fm)
    return m
