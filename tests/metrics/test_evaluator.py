"""The evaluator classifier: accuracy on digits, caching, and the FID/KID sanity ladders on its features."""

from __future__ import annotations

import pytest
import torch

from ldm.data.digits import DigitsDataModule
from ldm.metrics.evaluator import cache_key, load_or_train
from ldm.metrics.features import FeatureMetrics

DATA_CFG = {"_target_": "ldm.data.digits.DigitsDataModule", "image_size": 16, "split_seed": 0, "batch_size": 64}
FULL = {"steps": 600, "batch_size": 64, "lr": 2e-3, "width": 16, "feature_dim": 64, "seed": 0}  # conf default


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(image_size=16)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def evaluator(digits, tmp_path_factory):
    return load_or_train(digits, DATA_CFG, FULL, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def fm(evaluator, digits):
    return FeatureMetrics(evaluator.features, evaluator.feature_dim, digits.split("train").images, kid_subsets=50)


def test_evaluator_accuracy(evaluator):
    assert evaluator.trained and evaluator.accuracy >= 0.95  # measured 0.978 on the 180 test digits
    assert evaluator.feature_dim >= 64


def test_cache_loads_second_time_and_retrains_on_change(digits, tmp_path):
    small = {**FULL, "steps": 20}
    first = load_or_train(digits, DATA_CFG, small, tmp_path)
    again = load_or_train(digits, {**DATA_CFG, "batch_size": 7}, small, tmp_path)  # batch size: same data
    assert first.trained and not again.trained and again.path == first.path
    x = digits.split("test").images[:8]
    assert torch.equal(first.features(x), again.features(x))
    other = load_or_train(digits, {**DATA_CFG, "split_seed": 1}, small, tmp_path)
    assert other.trained and other.path != first.path
    assert cache_key(DATA_CFG, small) != cache_key({**DATA_CFG, "image_size": 8}, small)
    assert not list(tmp_path.rglob("*.tmp"))


def test_fid_of_a_set_with_itself_is_zero(fm, digits):
    train = digits.split("train").images
    assert fm.fid(train) == pytest.approx(0.0, abs=1e-6)


def test_fid_and_kid_ladder(fm, digits):
    """Real test vs train is small; adding noise of sigma 0.05, 0.1, 0.2, 0.4 raises FID and KID strictly."""
    test = digits.split("test").images
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(test.shape, generator=g)
    floor = fm.fid(test)
    fids, kids = [floor], [fm.kid(test)[0]]
    for sigma in (0.05, 0.1, 0.2, 0.4):
        noisy = (test + sigma * noise).clamp(-1, 1)
        fids.append(fm.fid(noisy))
        kids.append(fm.kid(noisy)[0])
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(kids, kids[1:])), kids
    assert fids[-1] > 3 * floor  # measured 4.8x


def test_prdc_of_identical_sets(fm, digits):
    out = fm.prdc(digits.split("train").images)  # the reference set itself
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    subset = fm.prdc(digits.split("train").images[:300])  # a subset lies inside the real manifold
    assert subset["precision"] == 1.0 and 0 < subset["recall"] < 1 and 0 < subset["coverage"] < 1
