"""The evaluator: a classifier trained once per dataset on its labelled train split, cached on disk."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.nn import functional as F

from ldm import cache
from ldm.data.base import TensorImages, batches
from ldm.errors import DataError
from ldm.nets.classifier import ConvClassifier
from ldm.utils.progress import progress

log = logging.getLogger(__name__)
# data settings that do not change the images or the split, so they do not change the evaluator
IGNORED_DATA_KEYS = ("batch_size", "num_workers", "shuffle_seed")
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
    return Evaluator(net.eval(), state["accuracy"], state["net_args"]["num_classes"], trained=False)


def load_or_train(datamodule, data_cfg: dict, evaluator_cfg: dict, cache_dir: str | Path) -> Evaluator:
    """The cached evaluator for this data config and code, training (and caching) it if absent or damaged.

    Concurrent jobs share the cache entry (ldm.cache): one trains under the lock while the others wait,
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
        net = train_classifier(train, datamodule.num_classes, **cfg)
        acc = accuracy(net, test)
        net_args = {"in_channels": net.body[0].in_channels, "num_classes": datamodule.num_classes,
                    "width": cfg["width"], "feature_dim": cfg["feature_dim"]}
        state = {"state_dict": net.state_dict(), "net_args": net_args, "accuracy": acc, "config": cfg}
        entry.publish({FILE: lambda tmp: torch.save(state, tmp)}, {"accuracy": acc, "config": cfg})
        log.info("evaluator: trained, test accuracy %.4f, cached at %s", acc, entry.dir)
        return Evaluator(net, acc, datamodule.num_classes, entry.dir, trained=True)
