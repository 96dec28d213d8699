"""In-memory image DataModule shared by every dataset: deterministic splits, step-indexed training batches."""

from __future__ import annotations

import math
from typing import Iterator, Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ldm.data.sampling import StepBatchSampler
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


def batches(split: Dataset, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, ...]]:
    """A split's items in order, `batch_size` at a time, through `__getitems__`.

    What evaluation asks of a split: `len`, `__getitems__(indices) -> (images, labels)` and `labels` (all
    labels as one tensor, -1 where unknown). Images are only ever read a batch at a time, so a split
    whose `__getitems__` loads from disk need not fit in memory.
    """
    for i in range(0, len(split), batch_size):
        yield split.__getitems__(list(range(i, min(i + batch_size, len(split)))))


def _collate_batch(batch):
    return batch  # already stacked by TensorImages.__getitems__


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic train/val/test split of range(n) from `seed`."""
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise ConfigError(f"data.{name}={frac} must be in [0, 1)")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if n - n_val - n_test < 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction leave no training images out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return {"test": perm[:n_test].sort().values, "val": perm[n_test:n_test + n_val].sort().values,
            "train": perm[n_test + n_val:].sort().values}


EVAL_BATCH = 256  # validation / test batches hold at least this many items: evaluation has no gradients to keep


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
    """Holds all images of a small dataset in memory; subclasses implement `load()`."""

    def __init__(self, image_size: int, channels: int, batch_size: int = 64, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, split_seed: int = 0, num_workers: int = 0,
                 shuffle_seed: Optional[int] = None, overfit_batches: int = 0) -> None:
        super().__init__(batch_size=batch_size, split_seed=split_seed, num_workers=num_workers,
                         shuffle_seed=shuffle_seed, overfit_batches=overfit_batches)
        if image_size < 1:
            raise ConfigError(f"data.image_size={image_size} must be a positive integer")
        if channels not in (1, 3):
            raise ConfigError(f"data.channels={channels} must be 1 (grayscale) or 3 (RGB)")
        self.image_size, self.channels = image_size, channels
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.num_classes = 0
        self.class_names: list[str] = []  # set by load() where the data names its classes, else "0", "1", ...

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return all images (N, C, H, W) float in [-1, 1] and labels (N,) long, -1 where unknown."""
        raise NotImplementedError

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits:
            return
        images, labels = self.load()
        assert images.shape[1:] == (self.channels, self.image_size, self.image_size), images.shape
        assert images.min() >= -1 and images.max() <= 1
        idx = split_indices(len(images), self.val_fraction, self.test_fraction, self.split_seed)
        self.splits = {k: TensorImages(images[v].contiguous(), labels[v].contiguous()) for k, v in idx.items()}
        self.num_classes = int(labels.max().item()) + 1 if (labels >= 0).any() else 0
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
