"""Crops of the natural RGB photographs shipped inside scikit-image (offline), one class per photo.

Each photo is downscaled (short side `photo_size`, never enlarged) and cut into a grid of `block_size` blocks;
the blocks of each photo are dealt to test, val and train at random (`split_seed`), and a crop belongs to a split
only when it lies entirely inside that split's blocks. No test or val crop shares a pixel with any train crop:
what a model reconstructs or the evaluator classifies on the test split are regions nothing trained on.
Crops are drawn by a seeded generator, the same number from every photo (balanced classes), and each split is
stored in a seeded random order (so its first images, e.g. in recon.png, mix the photos).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ldm.data.base import InMemoryImageDataModule
from ldm.errors import ConfigError, DataError

# name -> (skimage.data function, crop box (top, bottom, left, right) as fractions of the photo)
PHOTOS: dict[str, tuple[str, tuple[float, float, float, float]]] = {
    "astronaut": ("astronaut", (0, 1, 0, 1)),
    "chelsea": ("chelsea", (0, 1, 0, 1)),
    "coffee": ("coffee", (0, 1, 0, 1)),
    "rocket": ("rocket", (0, 1, 0, 1)),
    "motorcycle": ("stereo_motorcycle", (0, 1, 0, 1)),  # the left view of the stereo pair
    "hubble_deep_field": ("hubble_deep_field", (0, 1, 0, 1)),
    "immunohistochemistry": ("immunohistochemistry", (0, 1, 0, 1)),
    "retina": ("retina", (0.16, 0.84, 0.16, 0.84)),  # the square inside the fundus circle (no black border)
}
SPLITS = ("train", "val", "test")


def read_photo(name: str) -> np.ndarray:
    """One photo as (H, W, 3) uint8, from the files inside the scikit-image wheel (no download)."""
    try:
        import skimage.data
    except ImportError:
        raise DataError("data=textures reads the photos shipped with scikit-image, which is not installed: "
                        "pip install -e .[data] (or make install)") from None
    func, (top, bottom, left, right) = PHOTOS[name]
    photo = getattr(skimage.data, func)()
    if isinstance(photo, tuple):  # stereo_motorcycle: (left, right, disparity)
        photo = photo[0]
    h, w = photo.shape[:2]
    return np.ascontiguousarray(photo[round(top * h):round(bottom * h), round(left * w):round(right * w), :3])


def block_layout(shape: tuple[int, int], block: int, val_fraction: float, test_fraction: float,
                 rng: np.random.Generator) -> np.ndarray:
    """(rows, cols) grid of split ids (0 train, 1 val, 2 test) for a photo of `shape` cut into `block` squares
    (the last row and column also take the remainder); each split gets round(fraction * blocks), at least one."""
    rows, cols = shape[0] // block, shape[1] // block
    n = rows * cols
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise ConfigError(f"a {shape[0]}x{shape[1]} photo has {n} blocks of {block} px, too few for train, val and "
                          f"test: lower data.block_size or raise data.photo_size")
    ids = np.zeros(n, np.int64)
    order = rng.permutation(n)
    ids[order[:n_test]], ids[order[n_test:n_test + n_val]] = 2, 1
    return ids.reshape(rows, cols)


def pixel_mask(layout: np.ndarray, shape: tuple[int, int], block: int) -> np.ndarray:
    """(H, W) split id of every pixel under a block layout."""
    rows = np.minimum(np.arange(shape[0]) // block, layout.shape[0] - 1)
    cols = np.minimum(np.arange(shape[1]) // block, layout.shape[1] - 1)
    return layout[rows[:, None], cols[None, :]]


def crop_positions(inside: np.ndarray, size: int) -> np.ndarray:
    """(K, 2) top-left corners of every size x size window that lies entirely where `inside` is True."""
    h, w = inside.shape
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = inside.astype(np.int64).cumsum(0).cumsum(1)
    window = (integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size])
    return np.argwhere(window == size * size)


class TexturesDataModule(InMemoryImageDataModule):
    """32x32 (or `image_size`) crops of eight natural photos; label = the photo, class names = photo names.

    Sizes: `num_train`, `num_val` and `num_test` crops, split evenly over the photos. `photo_size` (null:
    12 x image_size) is the short side each photo is downscaled to before cropping (photos whose short side is
    already smaller keep it: chelsea's 300 px at the defaults); `block_size` (null: 2 x image_size) the side of
    the squares dealt to the splits.
    `val_fraction` and `test_fraction` are fractions of each photo's blocks. `crops[split]` holds every crop's
    (photo, top, left) in the resized photo, `layouts[photo]` the split of every block.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, num_train: int = 10000, num_val: int = 1000,
                 num_test: int = 2000, photos: Optional[Sequence[str]] = None, photo_size: Optional[int] = None,
                 block_size: Optional[int] = None, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 **kwargs) -> None:
        super().__init__(image_size=image_size, channels=channels, val_fraction=val_fraction,
                         test_fraction=test_fraction, **kwargs)
        self.photos = list(photos) if photos else list(PHOTOS)
        unknown = [p for p in self.photos if p not in PHOTOS]
        if unknown or len(set(self.photos)) != len(self.photos) or len(self.photos) < 2:
            raise ConfigError(f"data.photos={self.photos}: choose at least two distinct names from "
                              f"{', '.join(PHOTOS)} (or null for all)")
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        for split, n in self.counts.items():
            if n < 0 or (split == "train" and n < len(self.photos)):
                raise ConfigError(f"data.num_{split}={n} must be >= {len(self.photos) if split == 'train' else 0}")
        self.photo_size = photo_size or 12 * image_size
        self.block_size = block_size or 2 * image_size
        if self.block_size < image_size:
            raise ConfigError(f"data.block_size={self.block_size} must be >= data.image_size={image_size}: "
                              f"a crop must fit inside one block")
        if self.photo_size < 2 * self.block_size:
            raise ConfigError(f"data.photo_size={self.photo_size} must be at least twice data.block_size="
                              f"{self.block_size}")
        self.class_names = list(self.photos)
        self.crops: dict[str, torch.Tensor] = {}
        self.layouts: list[np.ndarray] = []
        self.shapes: list[tuple[int, int]] = []

    def _photo(self, name: str) -> torch.Tensor:
        """(C, H, W) in [-1, 1], short side downscaled to photo_size (never enlarged)."""
        x = torch.from_numpy(read_photo(name)).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1.0
        h, w = x.shape[-2:]
        if min(h, w) > self.photo_size:
            s = self.photo_size / min(h, w)
            size = (max(self.photo_size, round(h * s)), max(self.photo_size, round(w * s)))
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp(-1, 1)[0]
        if self.channels == 1:
            x = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
        return x

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        size = self.image_size
        crops: dict[str, list[torch.Tensor]] = {s: [] for s in SPLITS}
        coords: dict[str, list[tuple[int, int, int]]] = {s: [] for s in SPLITS}
        labels: dict[str, list[int]] = {s: [] for s in SPLITS}
        self.layouts, self.shapes, self.crops = [], [], {}
        for p, name in enumerate(self.photos):
            photo = self._photo(name)
            shape = tuple(photo.shape[-2:])
            rng = np.random.default_rng([self.split_seed, p])
            layout = block_layout(shape, self.block_size, self.val_fraction, self.test_fraction, rng)
            mask = pixel_mask(layout, shape, self.block_size)
            self.layouts.append(layout)
            self.shapes.append(shape)
            for s, split in enumerate(SPLITS):
                k = share(self.counts[split], len(self.photos), p)
                if k == 0:
                    continue
                pos = crop_positions(mask == s, size)
                if len(pos) == 0:
                    raise ConfigError(f"photo {name} has no room for a {size}px {split} crop: raise "
                                      f"data.{split}_fraction or data.block_size")
                pick = rng.choice(len(pos), size=k, replace=k > len(pos))
                for top, left in pos[np.sort(pick)].tolist():
                    crops[split].append(photo[:, top:top + size, left:left + size])
                    coords[split].append((p, top, left))
                labels[split] += [p] * k
        out = {}
        for i, s in enumerate(SPLITS):  # a seeded random order of each split, the same for images and coordinates
            order = torch.randperm(len(labels[s]), generator=torch.Generator().manual_seed(self.split_seed * 3 + i))
            self.crops[s] = torch.tensor(coords[s], dtype=torch.long).reshape(-1, 3)[order]
            images = torch.stack(crops[s]) if crops[s] else torch.empty(0, self.channels, size, size)
            out[s] = (images[order], torch.tensor(labels[s], dtype=torch.long)[order])
        return out


def share(total: int, parts: int, i: int) -> int:
    """Part i of `total` dealt as evenly as possible over `parts` (the first ones take the remainder)."""
    return total // parts + (1 if i < total % parts else 0)

