"""Floors and generated metrics as distributions over random subsets, not single draws.

A feature metric of n images against the train split has sampling noise of its own: 180 held-out digits give
FID 0.28-1.09 depending on which 180. So the real-data floor is the distribution of the metric over `subsets`
random held-out subsets of the generated set's size (stratified: each class in the train split's proportions,
so a subset is not more skewed than the data), reported as median and 5-95 % range; the generated set gets the
same treatment where it is large enough to hold several such subsets.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ldm.stats import quantile_range


def stratified_subset(labels: torch.Tensor, n: int, g: torch.Generator,
                      proportions: Optional[torch.Tensor] = None) -> torch.Tensor:
    """n sorted indices into a labelled set, without replacement: each class gets round(n * proportion) of them
    (`proportions` default to the set's own class frequencies; the remainder goes one by one to the class furthest
    below its target that has images left). Unlabelled sets (any label -1) get a plain random subset."""
    if bool((labels < 0).any()):
        return torch.randperm(len(labels), generator=g)[:n].sort().values
    k = int(labels.max()) + 1
    have = torch.bincount(labels, minlength=k)
    p = (proportions[:k] if proportions is not None else have).double()
    p = p / p.sum()
    target = p * n
    want = target.floor().long().minimum(have)
    while int(want.sum()) < min(n, len(labels)):  # one more to the class furthest below its target, with room
        shortfall = torch.where(want < have, target - want.double(), torch.full_like(target, -float("inf")))
        want[int(shortfall.argmax())] += 1
    picks = [idx[torch.randperm(len(idx), generator=g)[:int(want[c])]]
             for c in range(k) for idx in [torch.nonzero(labels == c).flatten()]]
    return torch.cat(picks).sort().values


def subset_distribution(score: Callable[[torch.Tensor], dict[str, float]], size: int, n: int, subsets: int,
                        seed: int, labels: Optional[torch.Tensor] = None,
                        proportions: Optional[torch.Tensor] = None) -> dict:
    """`score(indices)` (a dict of metrics) over `subsets` random subsets of `n` of `size` items.

    Returns {metric: {median, lo, hi, n, values}} plus `subset_n` and `equal_n` (False when `n` > `size`:
    then the one subset is the whole set and the range is a single value; the caller says so)."""
    g = torch.Generator().manual_seed(seed)
    equal = n <= size
    draws = subsets if equal and n < size else 1
    values: dict[str, list[float]] = {}
    for _ in range(draws):
        idx = (stratified_subset(labels, min(n, size), g, proportions) if labels is not None
               else torch.randperm(size, generator=g)[:min(n, size)].sort().values)
        for k, v in score(idx).items():
            values.setdefault(k, []).append(float(v))
    out: dict = {k: {**quantile_range(v), "values": v} for k, v in values.items()}
    out["subset_n"], out["equal_n"] = min(n, size), equal
    return out
