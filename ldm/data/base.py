"""In-memory image DataModule shared by every dataset: deterministic splits, step-indexed training batches."""

from __future__ import annotations

import math
from typing import Iterator, Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ldm.data.batch_sampler import StepBatchSampler
from ldm.errors import ConfigError


class TensorTuple(Dataset):
    """Rows of equally long tensors; `__getitems__` takes a whole batch at once (no per-item collate)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors need the same length")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, i: int):
        return tuple(t[i] for t in self.tensors)

    def __getitems__(self, indices: list[int]):
        if len(indices) > 1 and indices[-1] - indices[0] == len(indices) - 1 and \
                all(b - a == 1 for a, b in zip(indices, indices[1:])):
            return tuple(t[indices[0]:indices[-1] + 1] for t in self.tensors)  # a contiguous run: views, no copy
        idx = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


class TensorImages(TensorTuple):
    """(image, label) pairs held in memory: one implementation of a split (see `batches`)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__(images, labels)

    @property
    def images(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def labels(self) -> torch.Tensor:
        return self.tensors[1]


EVAL_BATCH = 256  # validation / test batches hold at least this many items: evaluation has no gradients to keep


def batches(split: Dataset, batch_size: int = EVAL_BATCH) -> Iterator[tuple[torch.Tensor, ...]]:
    """A split's items in order, `batch_size` at a time, through `__getitems__`.

    What evaluation asks of a split: `len`, `__getitems__(indices) -> (images, labels)` and `labels` (all
    labels as one tensor, -1 where unknown). Images are only ever read a batch at a time, so a split
    whose `__getitems__` loads from disk need not fit in memory.
    """
    for i in range(0, len(split), batch_size):
        yield split.__getitems__(list(range(i, min(i + batch_size, len(split)))))


def _collate_batch(batch):
    return batch  # already stacked by TensorImages.__getitems__


def _quotas(counts: list[int], fraction: float) -> list[int]:
    """Per-class shares of round(sum(counts) * fraction), each within one of count * fraction (largest remainders)."""
    total = round(sum(counts) * fraction)
    exact = [c * fraction for c in counts]
    out = [min(c, math.floor(e)) for c, e in zip(counts, exact)]
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order:
        if sum(out) >= total:
            break
        if out[i] < counts[i]:
            out[i] += 1
    return out


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int,
                  labels: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """Deterministic train/val/test split of range(n) from `seed`.

    With `labels` (every one >= 0) the split is stratified: each class contributes its share of the val and
    test images (within one image of count * fraction), so every split holds the classes in the proportions
    of the whole; the split sizes are those of the unstratified split.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise ConfigError(f"data.{name}={frac} must be in [0, 1)")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction leave no training images out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if labels is None:
        return {"test": perm[:n_test].sort().values, "val": perm[n_test:n_test + n_val].sort().values,
                "train": perm[n_test + n_val:].sort().values}
    labels = torch.as_tensor(labels)
    if len(labels) != n or bool((labels < 0).any()):
        raise ValueError("stratified split_indices needs one label >= 0 per item")
    classes = labels.unique().tolist()
    members = [perm[labels[perm] == c] for c in classes]  # each class in the random order of perm
    counts = [len(m) for m in members]
    tests = _quotas(counts, test_fraction)
    vals = _quotas([c - t for c, t in zip(counts, tests)], n_val / max(1, n - n_test))
    parts: dict[str, list[torch.Tensor]] = {"test": [], "val": [], "train": []}
    for m, t, v in zip(members, tests, vals):
        parts["test"].append(m[:t])
        parts["val"].append(m[t:t + v])
        parts["train"].append(m[t + v:])
    return {k: torch.cat(v).sort().values for k, v in parts.items()}



class StepDataModule(L.LightningDataModule):
    """Splits held in memory as `TensorTuple`s; endless, resumable training batches; sequential eval batches."""

    batch_key = "data.batch_size"  # the config key that sets `batch_size`, for error messages

    def __init__(self, batch_size: int = 64, split_seed: int = 0, num_workers: int = 0,
                 shuffle_seed: Optional[int] = None, overfit_batches: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.overfit_batches = overfit_batches  # > 0: train on only this many batches' worth of items (debug)
        self.eval_batch_size = max(batch_size, EVAL_BATCH)
        self.split_seed, self.num_workers = split_seed, num_workers
        # training order follows the run's seed (seed sweeps vary it); the split stays fixed by split_seed
        self.shuffle_seed = split_seed if shuffle_seed is None else shuffle_seed
        self.splits: dict[str, TensorTuple] = {}

    def setup(self, stage: Optional[str] = None) -> None:
        """Fill `self.splits` (name -> a split: `len`, `__getitems__`, `labels`); nothing to do by default."""

    def split(self, name: str) -> TensorTuple:
        self.setup()
        return self.splits[name]

    def train_dataloader(self) -> DataLoader:
        train = self.split("train")
        trainer = self.trainer
        # Resume-safe: start after the batches the restored loop has already completed.
        start = trainer.fit_loop.epoch_loop.batch_progress.total.completed if trainer is not None else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        try:
            items = min(len(train), self.overfit_batches * self.batch_size) if self.overfit_batches else len(train)
            sampler = StepBatchSampler(items, self.batch_size, seed=self.shuffle_seed, start=start,
                                       rank=rank, world_size=world)
        except ValueError as e:
            raise ConfigError(f"{self.batch_key}: {e}: lower {self.batch_key}") from None
        return DataLoader(train, batch_sampler=sampler, collate_fn=_collate_batch, num_workers=self.num_workers)

    def _eval_loader(self, name: str) -> DataLoader:
        ds = self.split(name)
        if len(ds) == 0:
            return DataLoader(ds, batch_size=1)
        bs = min(self.eval_batch_size, len(ds))
        batches = [list(range(i, min(i + bs, len(ds)))) for i in range(0, len(ds), bs)]
        return DataLoader(ds, batch_sampler=batches, collate_fn=_collate_batch, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


class InMemoryImageDataModule(StepDataModule):
    """Holds all images of a small dataset in memory; subclasses implement `load()` (or `load_splits()`).

    `latent_f`, `latent_channels` and `recon_check` are the data config's presets for the rest of the run
    (conf/backbone/default.yaml reads the first two; ldm.run.evaluation the last); they do not change the images.
    """

    def __init__(self, image_size: int, channels: int, batch_size: int = 64, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, split_seed: int = 0, num_workers: int = 0,
                 shuffle_seed: Optional[int] = None, overfit_batches: int = 0, latent_f: Optional[int] = None,
                 latent_channels: Optional[int] = None, recon_check: Optional[dict] = None) -> None:
        super().__init__(batch_size=batch_size, split_seed=split_seed, num_workers=num_workers,
                         shuffle_seed=shuffle_seed, overfit_batches=overfit_batches)
        if image_size < 1:
            raise ConfigError(f"data.image_size={image_size} must be a positive integer")
        if channels not in (1, 3):
            raise ConfigError(f"data.channels={channels} must be 1 (grayscale) or 3 (RGB)")
        self.image_size, self.channels = image_size, channels
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.latent_f, self.latent_channels, self.recon_check = latent_f, latent_channels, recon_check
        self.num_classes = 0
        self.class_names: list[str] = []  # set by load() where the data names its classes, else "0", "1", ...

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return all images (N, C, H, W) float in [-1, 1] and labels (N,) long, -1 where unknown."""
        raise NotImplementedError

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) of each of train, val and test. By default `load()` split by `split_indices`,
        stratified by class when every image has a label; datasets that build their splits from disjoint
        sources (photo regions, digit splits) override this."""
        images, labels = self.load()
        labelled = len(labels) > 0 and bool((labels >= 0).all())
        idx = split_indices(len(images), self.val_fraction, self.test_fraction, self.split_seed,
                            labels=labels if labelled else None)
        return {k: (images[v], labels[v]) for k, v in idx.items()}

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits:
            return
        parts = self.load_splits()
        for images, _ in parts.values():
            assert images.shape[1:] == (self.channels, self.image_size, self.image_size), images.shape
            assert len(images) == 0 or (images.min() >= -1 and images.max() <= 1)
        self.splits = {k: TensorImages(x.contiguous(), y.contiguous()) for k, (x, y) in parts.items()}
        labels = torch.cat([y for _, y in parts.values()])
        # classes the data names (some maybe absent from a subset), else 0..max label
        self.num_classes = len(self.class_names) or (int(labels.max().item()) + 1 if (labels >= 0).any() else 0)
        self.class_names = self.class_names or [str(i) for i in range(self.num_classes)]

    def __str__(self) -> str:
        return self.__repr__()

    def __repr__(self) -> str:
        sizes = {k: len(v) for k, v in self.splits.items()} or "not set up"
        return (f"{type(self).__name__}({self.channels}x{self.image_size}x{self.image_size}, "
                f"classes={self.num_classes}, splits={sizes})")


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) so the short side is `size` (antialiased bilinear), then centre-crop to size x size."""
    h, w = images.shape[-2:]
    if (h, w) != (size, size):
        s = size / min(h, w)
        nh, nw = max(size, math.ceil(h * s - 1e-6)), max(size, math.ceil(w * s - 1e-6))
        antialias = nh < h or nw < w
        images = torch.nn.functional.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False,
                                                 antialias=antialias)
        top, left = (nh - size) // 2, (nw - size) // 2
        images = images[..., top:top + size, left:left + size]
    return images.clamp(-1, 1)
