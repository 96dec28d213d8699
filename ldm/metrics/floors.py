"""Floors and generated metrics as distributions over random subsets, not single draws.

A feature metric of n images against the train split has sampling noise of its own: 180 held-out digits give
FID 0.28-1.09 depending on which 180. So the real-data floor is the distribution of the metric over `subsets`
random held-out subsets of the generated set's size, reported as median and 5-95 % range; the generated set gets
the same treatment where it is large enough to hold several such subsets.

A subset stands for what a perfect generator would give: n independent draws from the data distribution. So
its class counts are a multinomial draw with the train split's class proportions (the test split's own
proportions may differ), and its images are drawn from the test split within each class. Fixing the counts at
exactly n x proportion instead (the first version) removed the draws' own variation: on stacked digits (1000
modes, 2,000 samples) every mode got its two images, and the floor of modes covered read 994 where n
independent draws cover ~865 (`counts="exact"` keeps that scheme for tests and comparison).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch


def stratified_subset(labels: torch.Tensor, n: int, g: torch.Generator,
                      proportions: Optional[torch.Tensor] = None, counts: str = "multinomial") -> torch.Tensor:
    """n sorted indices into a labelled set, without replacement, with class counts following `proportions`
    (default: the set's own class frequencies). counts="multinomial": the counts are one multinomial draw of n
    (n independent draws of the class, as a generator's samples have; a class drawn more often than it has images
    keeps all of them and the rest are drawn again among the classes with room). counts="exact": each class gets
    floor(n * proportion), the remainder one by one to the class furthest below its target with room.
    Unlabelled sets (any label -1) get a plain random subset."""
    if counts not in ("multinomial", "exact"):
        raise ValueError(f"counts={counts!r}: choose multinomial or exact")
    if bool((labels < 0).any()):
        return torch.randperm(len(labels), generator=g)[:n].sort().values
    k = int(labels.max()) + 1
    have = torch.bincount(labels, minlength=k)
    p = (proportions[:k] if proportions is not None else have).double()
    p = p / p.sum()
    n = min(n, len(labels))
    if counts == "multinomial":
        want = torch.zeros(k, dtype=torch.long)
        while int(want.sum()) < n:  # draw what is missing among the classes with room (and probability) left
            room = (want < have) & (p > 0)
            q = torch.where(room, p, torch.zeros_like(p))
            if float(q.sum()) <= 0:  # only classes the proportions exclude have images left
                q = room.double()
            drawn = torch.bincount(torch.multinomial(q, n - int(want.sum()), replacement=True, generator=g),
                                   minlength=k)
            want = (want + drawn).minimum(have)
    else:
        target = p * n
        want = target.floor().long().minimum(have)
        while int(want.sum()) < n:  # one more to the class furthest below its target, with room
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


PRDC_FLOOR_MAX_N = 2000  # PRDC is O(n^2) per subset: its floor is drawn only up to this many images


def floor_metrics(fm, real: torch.Tensor, labels: Optional[torch.Tensor], n: int, subsets: int, seed: int,
                  proportions: Optional[torch.Tensor] = None, classes: Optional[Callable] = None) -> dict:
    """The real-data floor of every feature metric as a distribution: held-out features `real` (labels for
    stratifying), `subsets` subsets of `n`, each scored against `fm`'s reference (the train split) like a
    generated set. Keys: eval/<metric>_floor (median), _floor_lo / _floor_hi (5-95 %), eval/floor_n,
    eval/floor_equal_n, eval/floor_subsets. `classes(features) -> dict` adds class-coverage floors."""
    with_prdc = min(n, len(real)) <= PRDC_FLOOR_MAX_N

    def score(idx: torch.Tensor) -> dict:
        f = real[idx]
        out = {"fid": fm.fid(f), "kid": fm.kid(f)[0]}
        if with_prdc:
            out.update({k: v for k, v in fm.prdc(f, seed=int(idx[0])).items() if k != "prdc_k"})
        if classes is not None:
            out.update(classes(f))
        return out
    dist = subset_distribution(score, len(real), n, subsets, seed, labels, proportions)
    m = {"eval/floor_n": dist.pop("subset_n"), "eval/floor_equal_n": dist.pop("equal_n"),
         "eval/floor_subsets": len(next(iter(dist.values()))["values"])}
    for k, d in dist.items():
        m[f"eval/{k}_floor"], m[f"eval/{k}_floor_lo"], m[f"eval/{k}_floor_hi"] = d["median"], d["lo"], d["hi"]
    return m


def generated_distribution(fm, feats: torch.Tensor, n: int, subsets: int, seed: int) -> dict:
    """gen/fid and gen/kid over `subsets` random subsets of `n` generated samples (only meaningful when the set
    holds several such subsets): gen/<metric>_sub (median), _sub_lo, _sub_hi, gen/sub_n."""
    dist = subset_distribution(lambda idx: {"fid": fm.fid(feats[idx]), "kid": fm.kid(feats[idx])[0]},
                               len(feats), n, subsets, seed)
    m = {"gen/sub_n": dist.pop("subset_n")}
    dist.pop("equal_n")
    for k, d in dist.items():
        m[f"gen/{k}_sub"], m[f"gen/{k}_sub_lo"], m[f"gen/{k}_sub_hi"] = d["median"], d["lo"], d["hi"]
    return m


def quantile_range(values: Sequence, lo: float = 0.05, hi: float = 0.95) -> dict:
    """Median and the [lo, hi] quantiles (numpy's linear interpolation) of the finite numbers among `values`, e.g.
    a floor over subsets; {n: 0, None...} when there are none."""
    x = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not x:
        return {"n": 0, "median": None, "lo": None, "hi": None}
    median, q_lo, q_hi = (float(q) for q in np.quantile(np.asarray(x), [0.5, lo, hi]))
    return {"n": len(x), "median": median, "lo": q_lo, "hi": q_hi}
