"""Stacked digits: 1000 modes, train and test triples from disjoint digits, the VEEGAN/PacGAN mode count."""

from __future__ import annotations

import pytest
import torch

from ldm.data.stacked_digits import StackedDigitsDataModule
from ldm.errors import ConfigError
from ldm.metrics.evaluator import ChannelEvaluator, ChannelSplit
from ldm.metrics.generation import mode_coverage
from ldm.nets.classifier import ConvClassifier


@pytest.fixture(scope="module")
def stacked():
    dm = StackedDigitsDataModule(num_train=2000, num_val=100, num_test=2000)  # (defaults: 10,000, 1,000, 10,000)
    dm.setup()
    return dm


def test_sizes_and_all_1000_triples_reachable(stacked):
    assert {k: len(v) for k, v in stacked.splits.items()} == {"train": 2000, "val": 100, "test": 2000}
    assert stacked.num_classes == 1000 and len(stacked.class_names) == 1000
    assert stacked.class_names[371] == "3-7-1" and stacked.class_names[5] == "0-0-5"
    for name in ("train", "test"):  # every triple, equally often
        counts = stacked.split(name).labels.bincount(minlength=1000)
        assert (counts == 2).all(), name
    x = stacked.split("train").images
    assert x.shape[1:] == (3, 16, 16) and x.min() >= -1 and x.max() <= 1


def test_channels_are_digits_of_their_label_from_disjoint_digit_splits(stacked):
    from sklearn.datasets import load_digits

    from ldm.data.base import resize_center_crop

    d = load_digits()
    digits = resize_center_crop(torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8 - 1, 16)[:, 0]
    target = torch.tensor(d.target)
    split_of = {}
    for name, idx in stacked.digit_splits.items():
        for i in idx.tolist():
            split_of[digits[i].numpy().tobytes()] = (name, int(target[i]))
    assert len(stacked.digit_splits["test"]) == 180 and not (
        set(stacked.digit_splits["test"].tolist()) & set(stacked.digit_splits["train"].tolist()))
    for name in ("train", "val", "test"):
        split = stacked.split(name)
        for i in range(0, len(split), 97):
            label = int(split.labels[i])
            for c, digit in enumerate((label // 100, label // 10 % 10, label % 10)):
                assert split_of[split.images[i, c].numpy().tobytes()] == (name, digit), (name, i, c)


def test_deterministic_per_seed():
    a, b, c = (StackedDigitsDataModule(num_train=100, num_val=0, num_test=100, split_seed=s) for s in (0, 0, 1))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.split("test").images, b.split("test").images)
    assert not torch.equal(a.split("test").images, c.split("test").images)
    with pytest.raises(ConfigError, match="data.channels=3"):
        StackedDigitsDataModule(channels=1)


def test_a_generator_copying_one_training_image_covers_one_mode(stacked):
    torch.manual_seed(0)
    evaluator = ChannelEvaluator(ConvClassifier(1, 10, 8, 16), 0.0, 1000, channels=3, channel_classes=10)
    feats = evaluator.features(stacked.split("train").images[:1]).repeat(1000, 1)  # 1,000 copies of one image
    probs = evaluator.probs_from_features(feats)
    assert probs.shape == (1000, 1000) and torch.allclose(probs.sum(1), torch.ones(1000, dtype=torch.float64))
    cov = mode_coverage(probs.argmax(1), 1000)
    assert cov["modes_covered"] == 1 and cov["mode_kl"] == pytest.approx(torch.log(torch.tensor(1000.)).item())
    # the predicted mode is the triple of the per-channel predictions
    per = evaluator.channel_probs(feats[:1]).argmax(2)[0].tolist()
    assert probs[0].argmax().item() == 100 * per[0] + 10 * per[1] + per[2]


def test_uniform_sampler_of_real_test_triples_covers_990_modes(stacked):
    g = torch.Generator().manual_seed(0)
    labels = stacked.split("test").labels[torch.randint(0, len(stacked.split("test")), (10000,), generator=g)]
    cov = mode_coverage(labels, 1000)  # a perfect evaluator (with the trained one: the slow test below)
    assert cov["modes_covered"] >= 990 and cov["mode_kl"] < 0.1
    assert mode_coverage(labels % 100, 1000)["modes_covered"] == 100  # a generator that drops R: 100 modes


def test_channel_split_labels_each_channel(stacked):
    split = ChannelSplit(stacked.split("test"), 3, 10)
    label = int(stacked.split("test").labels[0])
    x, y = split.__getitems__([0, 1, 2])
    assert len(split) == 6000 and x.shape == (3, 1, 16, 16)
    assert y.tolist() == [label // 100, label // 10 % 10, label % 10]
    assert torch.equal(x[1, 0], stacked.split("test").images[0, 1])


@pytest.mark.slow
def test_evaluator_classifies_channels_and_counts_real_modes(stacked, tmp_path):
    """The default evaluator recipe (conf/metrics/features/evaluator.yaml) on stacked digits."""
    from ldm.metrics.evaluator import load_or_train

    recipe = {"steps": 600, "batch_size": 64, "lr": 2e-3, "width": 16, "feature_dim": 64, "seed": 0}
    evaluator = load_or_train(stacked, {"_target_": "ldm.data.stacked_digits.StackedDigitsDataModule"}, recipe,
                              tmp_path)
    assert isinstance(evaluator, ChannelEvaluator) and evaluator.feature_dim == 192
    assert evaluator.channel_accuracy >= 0.95 and evaluator.accuracy >= 0.85
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(stacked.split("test")), (10000,), generator=g)
    probs = evaluator.probs_from_features(evaluator.features(stacked.split("test").images[idx]))
    assert mode_coverage(probs.argmax(1), 1000)["modes_covered"] >= 990


def test_real_modes_are_counted_at_the_samples_n(stacked, monkeypatch, tmp_path):
    from ldm.metrics import figures
    from ldm.metrics.generation import stacked_modes

    drawn = {}
    monkeypatch.setattr(figures, "channel_histogram_plot", lambda generated, path, **kw: drawn.update(kw))
    evaluator = ChannelEvaluator(ConvClassifier(1, 10, 8, 16), 0.0, 1000, channels=3, channel_classes=10)
    real = torch.nn.functional.one_hot(stacked.split("test").labels, 1000).double()  # 2,000: every mode twice
    m = stacked_modes(evaluator, real[:100], real, stacked, tmp_path)
    assert m["eval/real_modes_n"] == 100 and m["eval/real_modes_covered"] <= 100 and m["gen/modes_covered"] <= 100
    assert stacked_modes(evaluator, real, real, stacked, tmp_path)["eval/real_modes_covered"] == 1000
    assert drawn["names"] == [str(d) for d in range(10)] and drawn["channel_names"] == ["R", "G", "B"]
