"""Memorisation metrics: a copy generator is caught, held-out images from the same distribution are not."""

from __future__ import annotations

import pytest
import torch

from ldm.metrics.memorisation import closest_pairs_figure, copy_metrics, nearest_two


def test_nearest_two_known_answer():
    ref = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    d1, d2, idx = nearest_two(torch.tensor([[0.0, 0.0], [3.0, 5.0]]), ref)
    assert d1.tolist() == [0.0, 1.0] and d2.tolist() == [5.0, pytest.approx(34 ** 0.5)] and idx.tolist() == [0, 1]
    with pytest.raises(ValueError, match="at least 2"):
        nearest_two(ref, ref[:1])


def test_copy_generator_is_caught_and_heldout_is_not(tmp_path):
    g = torch.Generator().manual_seed(0)
    # 1,797 "images" from one smooth distribution (low-rank + noise, like digits): 1,400 train, 397 held out
    x = (torch.randn(1797, 6, generator=g) @ torch.randn(6, 64, generator=g) / 3
         + 0.1 * torch.randn(1797, 64, generator=g)).tanh().view(-1, 1, 8, 8)
    perm = torch.randperm(len(x), generator=g)
    train, heldout = x[perm[:1400]], x[perm[1400:]]
    copies = train[torch.randint(0, len(train), (300,), generator=g)]  # a generator that returns training images
    m, pairs = copy_metrics(copies, heldout, train)
    assert m["copy_rate"] == 1.0 and m["ratio_rate"] == 1.0 and m["nn_median"] < 1e-6
    assert m["copy_rate_heldout"] <= 0.02 and m["ratio_rate_heldout"] <= 0.05  # new digits are not copies
    noisy = (copies + 0.6 * torch.randn(copies.shape, generator=g)).clamp(-1, 1)  # far from any training image
    m2, _ = copy_metrics(noisy, heldout, train)
    assert m2["copy_rate"] <= 0.05 and m2["nn_median"] > m["nn_median_heldout"]
    closest_pairs_figure(copies, train, pairs, tmp_path / "closest.png")
    assert (tmp_path / "closest.png").stat().st_size > 0
