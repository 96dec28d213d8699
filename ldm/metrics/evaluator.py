"""The evaluator: a classifier trained once per dataset on its labelled train split, cached on disk."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.nn import functional as F

from ldm.data.base import TensorImages, batches
from ldm.errors import DataError
from ldm.nets.classifier import ConvClassifier
from ldm.utils import cache
from ldm.utils.progress import progress

log = logging.getLogger(__name__)
# data settings that do not change the images or the split, so they do not change the evaluator
IGNORED_DATA_KEYS = ("batch_size", "num_workers", "shuffle_seed", "latent_f", "latent_channels", "recon_check",
                     "cache_dir")
FILE = "evaluator.pt"  # the cache entry's file
# the code that decides the evaluator's weights: its recipe and network, and the images it learns from
CODE = ("metrics/evaluator.py", "nets/classifier.py", "data")


def cache_key(data_cfg: dict, evaluator_cfg: dict) -> str:
    """Hash of everything that changes the evaluator: the data identity, the training recipe and its code."""
    data = {k: v for k, v in data_cfg.items() if k not in IGNORED_DATA_KEYS}
    return cache.key({"data": data, "evaluator": evaluator_cfg}, code=cache.code_hash(*CODE))[:16]


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 1/8 of the image size (padding by edge replication)."""
    pad = max(1, x.shape[-1] // 8)
    xp = F.pad(x, (pad,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()
    return xp[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


@torch.no_grad()
def accuracy(net: ConvClassifier, split, batch_size: int = 512) -> float:
    """Fraction of a split's images (read batch by batch) that `net` gives their label."""
    net.eval()
    dev = next(net.parameters()).device
    correct = sum((net(x.to(dev)).argmax(1).cpu() == y).sum().item() for x, y in batches(split, batch_size))
    return correct / max(1, len(split))


@torch.enable_grad()  # also when called under no_grad (evaluation)
def train_classifier(train, num_classes: int, *, steps: int, batch_size: int, lr: float, width: int,
                     feature_dim: int, seed: int) -> ConvClassifier:
    """Adam with cosine decay on shifted copies of random batches of the labelled `train` split."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    in_channels = train.__getitems__([0])[0].shape[1]
    net = ConvClassifier(in_channels, num_classes, width, feature_dim)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for _ in progress(range(steps), desc="evaluator", unit="step"):
        idx = torch.randint(0, len(train), (min(batch_size, len(train)),), generator=g)
        x, y = train.__getitems__(idx.tolist())
        loss = F.cross_entropy(net(_augment(x, g)), y, label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@dataclass
class Evaluator:
    """Features (penultimate, pre-activation) and class probabilities of a trained classifier."""

    net: ConvClassifier
    accuracy: float
    num_classes: int
    path: Optional[Path] = None
    trained: bool = False

    @property
    def feature_dim(self) -> int:
        return self.net.feature_dim

    def accuracy_on(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of `images` given their true label; on reconstructions: how often the digit's class survives."""
        return accuracy(self.net, TensorImages(images, labels))

    def predict_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Predicted classes (the argmax of `probs_from_features`)."""
        return self.probs_from_features(feats).argmax(1)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        self.net.eval()
        dev = next(self.net.parameters()).device
        return torch.cat([self.net.features(images[i:i + batch_size].to(dev)).double().cpu()
                          for i in range(0, len(images), batch_size)])

    @torch.no_grad()
    def probs_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        dev = next(self.net.parameters()).device
        return self.net.logits_from_features(feats.float().to(dev)).softmax(1).double().cpu()


class ChannelSplit:
    """A split of C-channel images whose label is a mode index in base `k` (R most significant), seen as C
    times as many single-channel images labelled with their channel's class: what a per-channel evaluator
    learns from. Item i is channel i % C of image i // C."""

    def __init__(self, split, channels: int, k: int) -> None:
        self.split, self.channels, self.k = split, channels, k

    def __len__(self) -> int:
        return len(self.split) * self.channels

    def __getitems__(self, indices: list[int]):
        idx = torch.as_tensor(indices, dtype=torch.long)
        images, modes = self.split.__getitems__((idx // self.channels).tolist())
        c = idx % self.channels
        x = images[torch.arange(len(idx)), c].unsqueeze(1)
        return x, modes // self.k ** (self.channels - 1 - c) % self.k

    @property
    def labels(self) -> torch.Tensor:
        return self.__getitems__(list(range(len(self))))[1]


@dataclass
class ChannelEvaluator(Evaluator):
    """An evaluator of stacked data (ldm.data.stacked_digits): one k-class classifier applied to each of the C
    channels. Features are the C channels' features side by side (C x feature_dim); the class probabilities
    are over the k^C modes (the outer product of the channels' probabilities, R most significant), so the
    predicted mode is the triple of per-channel predictions. `accuracy` is the mode accuracy on the test split
    (every channel right), `channel_accuracy` the per-channel one."""

    channels: int = 3
    channel_classes: int = 10
    channel_accuracy: float = 0.0

    @property
    def feature_dim(self) -> int:
        return self.channels * self.net.feature_dim

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        n, c = images.shape[:2]
        flat = super().features(images.reshape(n * c, 1, *images.shape[2:]), batch_size)
        return flat.reshape(n, c * self.net.feature_dim)

    @torch.no_grad()
    def channel_probs(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, C, k) class probabilities of each channel."""
        n = len(feats)
        per = super().probs_from_features(feats.reshape(n * self.channels, self.net.feature_dim))
        return per.reshape(n, self.channels, self.channel_classes)

    @torch.no_grad()
    def probs_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        per = self.channel_probs(feats)
        probs = per[:, 0]
        for c in range(1, self.channels):  # outer product: mode index = sum of d_c k^(C-1-c)
            probs = (probs.unsqueeze(2) * per[:, c].unsqueeze(1)).flatten(1)
        return probs

    def accuracy_on(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of `images` whose every channel gets its class (the mode is right)."""
        return float((self.predict_from_features(self.features(images)) == labels).double().mean()) \
            if len(labels) else 0.0

    def channels_of(self, modes: torch.Tensor) -> torch.Tensor:
        """(N,) mode indices -> (N, C) per-channel classes."""
        powers = self.channel_classes ** torch.arange(self.channels - 1, -1, -1)
        return modes.unsqueeze(1) // powers % self.channel_classes


def check_labelled(datamodule) -> None:
    """DataError unless every training image has a label and there are at least 2 classes."""
    if datamodule.num_classes < 2 or bool((datamodule.split("train").labels < 0).any()):
        raise DataError(f"metrics/features=evaluator needs labelled data with at least 2 classes, but the data has "
                        f"{datamodule.num_classes} (class folders give labels): use metrics/features=inception, or "
                        f"metrics.features=null")


class EvaluatorFeatures:
    """`metrics.features` for labelled data: the cached evaluator (trained on first use) as the feature extractor."""

    def __init__(self, *, steps: int, batch_size: int, lr: float, width: int, feature_dim: int, seed: int) -> None:
        self.recipe = dict(steps=steps, batch_size=batch_size, lr=lr, width=width, feature_dim=feature_dim, seed=seed)

    def check(self, datamodule) -> None:
        check_labelled(datamodule)

    def __call__(self, datamodule, data_cfg: dict, cache_dir: str | Path, device: torch.device) -> Evaluator:
        evaluator = load_or_train(datamodule, data_cfg, self.recipe, cache_dir)
        evaluator.net.to(device)
        return evaluator


def _load(path: Path) -> Evaluator:
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = ConvClassifier(**state["net_args"])
    net.load_state_dict(state["state_dict"])
    per_channel = state.get("per_channel")
    if per_channel:
        k, c = state["net_args"]["num_classes"], per_channel
        return ChannelEvaluator(net.eval(), state["accuracy"], k ** c, trained=False, channels=c, channel_classes=k,
                                channel_accuracy=state["channel_accuracy"])
    return Evaluator(net.eval(), state["accuracy"], state["net_args"]["num_classes"], trained=False)


def load_or_train(datamodule, data_cfg: dict, evaluator_cfg: dict, cache_dir: str | Path) -> Evaluator:
    """The cached evaluator for this data config and code, training (and caching) it if absent or damaged.

    Concurrent jobs share the cache entry (ldm.utils.cache): one trains under the lock while the others wait,
    then load; a truncated or altered file fails its checksum, is moved aside and retrained.
    """
    check_labelled(datamodule)
    train, test = datamodule.split("train"), datamodule.split("test")
    entry = cache.Entry(cache_dir, "evaluator", cache_key(data_cfg, evaluator_cfg))
    with entry.locked():
        loaded = entry.load(FILE, _load)
        if loaded is not None:
            log.info("evaluator: loaded %s (test accuracy %.4f)", entry.dir, loaded.accuracy)
            loaded.path = entry.dir
            return loaded
        cfg = dict(evaluator_cfg)
        k = int(getattr(datamodule, "channel_classes", 0) or 0)  # stacked data: classify each channel
        if k:
            c = int(train.__getitems__([0])[0].shape[1])
            net = train_classifier(ChannelSplit(train, c, k), k, **cfg)
            evaluator: Evaluator = ChannelEvaluator(net, 0.0, k ** c, entry.dir, trained=True, channels=c,
                                                    channel_classes=k)
            evaluator.channel_accuracy = accuracy(net, ChannelSplit(test, c, k))
            evaluator.accuracy = sum(evaluator.accuracy_on(x, y) * len(y) for x, y in batches(test)) / max(1, len(test))
            extra = {"per_channel": c, "channel_accuracy": evaluator.channel_accuracy}
        else:
            net = train_classifier(train, datamodule.num_classes, **cfg)
            evaluator, extra = Evaluator(net, accuracy(net, test), datamodule.num_classes, entry.dir, trained=True), {}
        acc = evaluator.accuracy
        net_args = {"in_channels": net.body[0].in_channels, "num_classes": k or datamodule.num_classes,
                    "width": cfg["width"], "feature_dim": cfg["feature_dim"]}
        state = {"state_dict": net.state_dict(), "net_args": net_args, "accuracy": acc, "config": cfg, **extra}
        entry.publish({FILE: lambda tmp: torch.save(state, tmp)}, {"accuracy": acc, "config": cfg, **extra})
        log.info("evaluator: trained, test accuracy %.4f%s, cached at %s", acc,
                 f" (per channel {extra['channel_accuracy']:.4f})" if extra else "", entry.dir)
        return evaluator
