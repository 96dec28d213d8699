"""Digits DataModule: split sizes, determinism, value range, step-indexed sampling."""

from __future__ import annotations

import pytest
import torch

from ldm.data.batch_sampler import StepBatchSampler
from ldm.data.digits import DigitsDataModule
from ldm.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(image_size=16, batch_size=64, split_seed=0)
    dm.setup()
    return dm


def test_split_sizes_and_disjoint(digits):
    from sklearn.datasets import load_digits

    from ldm.data.base import split_indices

    sizes = {k: len(v) for k, v in digits.splits.items()}
    assert sizes == {"train": 1437, "val": 180, "test": 180}
    assert digits.num_classes == 10
    labels = torch.tensor(load_digits().target)
    idx = split_indices(1797, 0.1, 0.1, seed=0, labels=labels)  # the split the module used (split_seed=0)
    sets = {k: set(v.tolist()) for k, v in idx.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert set().union(*sets.values()) == set(range(1797))  # a partition: every image in exactly one split
    for k, v in idx.items():  # each split holds exactly those images, in that order
        assert torch.equal(digits.split(k).labels, labels[v]), k


def test_splits_are_stratified_by_class(digits):
    """Each class is as large a share of val and of test as of train: within one image of train's proportion."""
    train = digits.split("train").labels.bincount(minlength=10).double() / len(digits.split("train"))
    for name in ("val", "test"):
        split = digits.split(name)
        counts = split.labels.bincount(minlength=10).double()
        assert (counts - train * len(split)).abs().max() <= 1, (name, counts.tolist())


def test_value_range_and_shape(digits):
    x = digits.split("train").images
    assert x.shape[1:] == (1, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x.min() < -0.99 and x.max() > 0.9  # uses the full range, not a sliver of it


def test_native_size_is_exact():
    dm = DigitsDataModule(image_size=8)
    dm.setup()
    from sklearn.datasets import load_digits

    raw = torch.tensor(load_digits().images, dtype=torch.float32) / 8 - 1
    all_images = torch.cat([s.images for s in dm.splits.values()])[:, 0]
    assert torch.equal(all_images.sort(0).values, raw.sort(0).values)


def test_split_is_deterministic_and_seeded():
    a, b, c = (DigitsDataModule(split_seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup()
    for k in ("train", "val", "test"):
        assert torch.equal(a.split(k).images, b.split(k).images)
        assert torch.equal(a.split(k).labels, b.split(k).labels)
    assert not torch.equal(a.split("test").labels, c.split("test").labels)


def test_labels_kept(digits):
    x, y = next(iter(digits.val_dataloader()))
    assert y.dtype == torch.long and set(y.tolist()) <= set(range(10)) and len(x) == len(y)


def test_train_loader_batches_without_trainer(digits):
    x, y = next(iter(digits.train_dataloader()))
    assert x.shape == (64, 1, 16, 16) and y.shape == (64,)


def test_bad_channels():
    with pytest.raises(ConfigError, match="grayscale"):
        DigitsDataModule(channels=3)


def test_step_sampler_epochs_are_permutations():
    s = StepBatchSampler(num_samples=10, batch_size=3, seed=0)
    it = iter(s)
    epoch0 = sum((next(it) for _ in range(3)), [])
    assert len(set(epoch0)) == 9  # without replacement inside an epoch, remainder dropped
    assert s.batches_per_epoch == 3


def test_step_sampler_resume_and_ranks():
    full = StepBatchSampler(100, 8, seed=3)
    it = iter(full)
    stream = [next(it) for _ in range(40)]
    resumed = iter(StepBatchSampler(100, 8, seed=3, start=17))
    assert [next(resumed) for _ in range(23)] == stream[17:]
    # two ranks split each global batch: together, step for step, they train on the single-process stream
    r0, r1 = (iter(StepBatchSampler(100, 8, seed=3, rank=r, world_size=2)) for r in (0, 1))
    for batch in stream:
        a, b = next(r0), next(r1)
        assert len(a) == len(b) == 4 and sorted(a + b) == sorted(batch) and a == batch[0::2] and b == batch[1::2]
    resumed_rank = iter(StepBatchSampler(100, 8, seed=3, start=17, rank=1, world_size=2))
    assert next(resumed_rank) == stream[17][1::2]
    with pytest.raises(ValueError, match="batch_size=8 does not split evenly over 3 devices"):
        StepBatchSampler(100, 8, world_size=3)


def test_step_sampler_rejects_large_batch():
    with pytest.raises(ValueError, match="larger than the training set"):
        StepBatchSampler(5, 8)
