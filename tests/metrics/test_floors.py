"""Floors as distributions: stratified subsets, the spread of a metric over them, equal-n bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldm.metrics.features import FeatureMetrics
from ldm.metrics.floors import quantile_range, stratified_subset, subset_distribution


def test_exact_stratified_subset_keeps_class_proportions():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    g = torch.Generator().manual_seed(0)
    idx = stratified_subset(labels, 40, g, counts="exact")
    assert len(idx) == 40 == len(set(idx.tolist()))
    assert torch.bincount(labels[idx]).tolist() == [20, 12, 8]  # the set's own 50/30/20 %
    # other proportions (e.g. the train split's): uniform over 3 classes -> 14/13/13, within one image each
    counts = torch.bincount(labels[stratified_subset(labels, 40, g, torch.tensor([1.0, 1.0, 1.0]), "exact")])
    assert sorted(counts.tolist()) == [13, 13, 14]
    capped = torch.bincount(labels[stratified_subset(labels, 90, g, torch.tensor([0.1, 0.1, 0.8]), "exact")])
    assert capped.tolist()[2] == 20 and int(capped.sum()) == 90  # class 2 has only 20: the rest go to the others
    assert len(stratified_subset(torch.full((30,), -1), 10, g)) == 10  # unlabelled: plain random subset
    with pytest.raises(ValueError, match="choose multinomial or exact"):
        stratified_subset(labels, 10, g, counts="rounded")


def test_multinomial_subset_covers_modes_like_independent_draws():
    """The floor's subset stands for n independent draws: 1000 equally likely classes (10 images each), 2,000
    draws cover 1000 (1 - (1 - 1/1000)^2000) ~ 864.7 classes on average; exact counts give each class its two,
    all 1000 (the artefact the multinomial counts remove). Counts average n x proportion; a class with fewer
    images than it drew keeps them all and the total is still n, without repeats."""
    labels = torch.arange(1000).repeat_interleave(10)
    g = torch.Generator().manual_seed(0)
    covered = [len(torch.unique(labels[stratified_subset(labels, 2000, g)])) for _ in range(5)]
    assert all(835 <= c <= 895 for c in covered), covered
    assert len(torch.unique(labels[stratified_subset(labels, 2000, g, counts="exact")])) == 1000
    small = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    mean = torch.stack([torch.bincount(small[stratified_subset(small, 40, g)], minlength=3).double()
                        for _ in range(400)]).mean(0)
    assert torch.allclose(mean, torch.tensor([20.0, 12.0, 8.0], dtype=torch.float64), atol=0.6), mean
    idx = stratified_subset(small, 90, g, torch.tensor([0.1, 0.1, 0.8]))
    assert len(idx) == 90 == len(set(idx.tolist())) and torch.bincount(small[idx]).tolist()[2] == 20


def _fm(reference):
    return FeatureMetrics(lambda x: x, reference.shape[1], reference, kid_subsets=10, kid_subset_size=100,
                          prdc_k=5)


def test_floor_of_a_set_against_itself_is_near_zero_and_narrow():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2000, 4, generator=g, dtype=torch.float64)
    fm = _fm(ref)
    out = subset_distribution(lambda idx: {"fid": fm.fid(ref[idx])}, len(ref), 1800, subsets=20, seed=0)
    f = out["fid"]
    assert out["equal_n"] and out["subset_n"] == 1800 and f["n"] == 20
    assert 0 <= f["lo"] <= f["median"] <= f["hi"] < 0.01
    held = torch.randn(3000, 4, generator=g, dtype=torch.float64)  # other draws of the same distribution
    small = subset_distribution(lambda idx: {"fid": fm.fid(held[idx])}, len(held), 100, subsets=20, seed=0)
    assert small["fid"]["hi"] - small["fid"]["lo"] > 5 * (f["hi"] - f["lo"])  # n = 100: a wide floor
    again = subset_distribution(lambda idx: {"fid": fm.fid(held[idx])}, len(held), 100, subsets=20, seed=0)
    assert again["fid"]["values"] == small["fid"]["values"]  # deterministic per seed


def test_unequal_n_is_reported():
    out = subset_distribution(lambda idx: {"n": len(idx)}, 50, 80, subsets=20, seed=0)
    assert out["equal_n"] is False and out["subset_n"] == 50 and out["n"]["values"] == [50.0]
    assert out["n"]["median"] == pytest.approx(50.0)


def test_floor_metrics_keys_and_unequal_n():
    from ldm.metrics.floors import floor_metrics, generated_distribution

    g = torch.Generator().manual_seed(0)
    train = torch.randn(400, 4, generator=g, dtype=torch.float64)
    held = torch.randn(120, 4, generator=g, dtype=torch.float64)
    labels = torch.arange(120) % 3
    fm = _fm(train)
    m = floor_metrics(fm, held, labels, 60, subsets=5, seed=0, classes=lambda f: {"classes_covered": 3.0})
    assert m["eval/floor_n"] == 60 and m["eval/floor_equal_n"] and m["eval/floor_subsets"] == 5
    for k in ("fid", "kid", "precision", "recall", "density", "coverage", "classes_covered"):
        assert m[f"eval/{k}_floor_lo"] <= m[f"eval/{k}_floor"] <= m[f"eval/{k}_floor_hi"], k
    big = floor_metrics(fm, held, labels, 500, subsets=5, seed=0)  # more samples than held-out images
    assert big["eval/floor_equal_n"] is False and big["eval/floor_n"] == 120 and big["eval/floor_subsets"] == 1
    gen = generated_distribution(fm, torch.randn(300, 4, generator=g, dtype=torch.float64), 100, 5, 0)
    assert gen["gen/sub_n"] == 100 and gen["gen/fid_sub_lo"] <= gen["gen/fid_sub"] <= gen["gen/fid_sub_hi"]


def test_floors_are_computed_once_per_data_n_and_seed(tmp_path, monkeypatch):
    """The floor is a property of the data: a second run with the same data, n, seed and metric settings reads it
    from the cache (the same numbers), another seed or n computes its own."""
    from ldm.run import evaluation

    calls = []

    def fake_floors(fm, real_test, test, datamodule, evaluator, n, cfg, seed):
        calls.append((n, seed))
        return {"eval/fid_floor": 0.1 * seed + n, "eval/floor_n": n}

    monkeypatch.setattr(evaluation, "floors", fake_floors)
    cfg = {"features": {"_target_": "x"}, "floor_subsets": 20, "kid_subsets": 10, "kid_subset_size": 50, "prdc_k": 5}
    data = {"_target_": "ldm.data.digits.DigitsDataModule", "image_size": 16, "batch_size": 64}
    args = (None, None, None, None, None)
    first = evaluation.cached_floors(*args, 180, cfg, 0, data, str(tmp_path))
    again = evaluation.cached_floors(*args, 180, cfg, 0, {**data, "batch_size": 16}, str(tmp_path))
    assert first == again == {"eval/fid_floor": 180.0, "eval/floor_n": 180} and calls == [(180, 0)]
    evaluation.cached_floors(*args, 180, cfg, 1, data, str(tmp_path))
    evaluation.cached_floors(*args, 90, cfg, 0, data, str(tmp_path))
    evaluation.cached_floors(*args, 180, {**cfg, "floor_subsets": 3}, 0, data, str(tmp_path))
    assert calls == [(180, 0), (180, 1), (90, 0), (180, 0)]


def test_floor_seed_is_fixed_across_run_seeds_unless_null():
    from ldm.run.evaluation import floor_seed

    assert floor_seed({"seed": 3, "floor_seed": 0}) == floor_seed({"seed": 7, "floor_seed": 0}) == 0
    assert floor_seed({"seed": 3, "floor_seed": None}) == 3 and floor_seed({"seed": 5}) == 5


def test_quantile_range_matches_numpy():
    x = np.random.default_rng(1).gamma(2.0, size=37)
    q = quantile_range(x.tolist())
    assert q["n"] == 37
    for k, p in (("median", 0.5), ("lo", 0.05), ("hi", 0.95)):
        assert q[k] == pytest.approx(float(np.quantile(x, p)))
    assert quantile_range([])["median"] is None
    # by hand: linear interpolation between order statistics; non-finite values and booleans are not numbers here
    assert quantile_range([4, 1, float("nan"), 3, True, float("inf"), 2]) == pytest.approx(
        {"n": 4, "median": 2.5, "lo": 1.15, "hi": 3.85})
