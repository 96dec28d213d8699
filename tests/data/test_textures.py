"""Textures: crops of scikit-image's photos; held-out crops never touch a train pixel; seeded, balanced, named."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from ldm.data.textures import PHOTOS, TexturesDataModule, crop_positions, pixel_mask
from ldm.errors import ConfigError, DataError

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def textures():
    dm = TexturesDataModule(num_train=800, num_val=80, num_test=160)  # all eight photos (defaults 10k, 1k, 2k crops)
    dm.setup()
    return dm


def small(**kw) -> TexturesDataModule:
    kw = {"photos": ["astronaut", "coffee"], "num_train": 40, "num_val": 8, "num_test": 16, **kw}
    dm = TexturesDataModule(**kw)
    dm.setup()
    return dm


def covered(dm: TexturesDataModule, split: str, photo: int) -> np.ndarray:
    """(H, W) True on every pixel of photo `photo` that some crop of `split` covers."""
    out = np.zeros(dm.shapes[photo], bool)
    s = dm.image_size
    for p, top, left in dm.crops[split].tolist():
        if p == photo:
            out[top:top + s, left:left + s] = True
    return out


def assert_held_out_crops_avoid_train(dm: TexturesDataModule) -> None:
    s = dm.image_size
    for p in range(len(dm.photos)):
        train = covered(dm, "train", p)
        assert train.any()
        for split, sid in (("val", 1), ("test", 2)):
            inside = pixel_mask(dm.layouts[p], dm.shapes[p], dm.block_size) == sid
            for q, top, left in dm.crops[split].tolist():
                if q == p:
                    assert not train[top:top + s, left:left + s].any(), (dm.photos[p], split, top, left)
                    assert inside[top:top + s, left:left + s].all()  # and it lies in its own split's blocks
        assert not (covered(dm, "test", p) & covered(dm, "val", p)).any()


def test_no_test_crop_overlaps_a_train_crop(textures):
    assert_held_out_crops_avoid_train(textures)


def test_sizes_classes_and_names(textures):
    assert textures.shapes[0] == (384, 384) and textures.shapes[1] == (300, 451)  # astronaut 512 -> 384, chelsea
    sizes = {k: len(v) for k, v in textures.splits.items()}
    assert sizes == {"train": 800, "val": 80, "test": 160}
    assert textures.num_classes == len(PHOTOS) == 8 and textures.class_names == list(PHOTOS)
    for name, n in sizes.items():  # the same number of crops from every photo
        counts = textures.split(name).labels.bincount(minlength=8)
        assert counts.min() == counts.max() == n // 8, name
        assert textures.crops[name].shape == (n, 3)
    x = textures.split("test").images
    assert x.shape[1:] == (3, 32, 32) and x.min() >= -1 and x.max() <= 1 and x.std() > 0.2


def test_crops_are_the_photo_at_their_coordinates(textures):
    for name in ("train", "test"):
        split, crops = textures.split(name), textures.crops[name]
        for i in range(2):  # two random crops (each split is stored in a random order)
            p, top, left = crops[i].tolist()
            photo = textures._photo(textures.photos[p])
            assert split.labels[i] == p
            assert torch.equal(split.images[i], photo[:, top:top + 32, left:left + 32])


def test_crops_are_deterministic_per_seed_and_count_the_photos_used():
    a, b, c = small(), small(), small(split_seed=1)
    assert a.num_classes == 2 and a.class_names == ["astronaut", "coffee"]
    for k in ("train", "val", "test"):
        assert torch.equal(a.crops[k], b.crops[k]) and torch.equal(a.split(k).images, b.split(k).images)
    assert not torch.equal(a.crops["test"], c.crops["test"])
    assert_held_out_crops_avoid_train(c)


def test_image_size_64_scales_photos_and_blocks_and_never_enlarges():
    dm = small(image_size=64, photos=["chelsea", "retina"])
    assert (dm.photo_size, dm.block_size) == (768, 128)
    assert dm.shapes == [(300, 451), (768, 768)]  # chelsea keeps its 300 px, the retina's 959 px square shrinks
    assert dm.split("train").images.shape[1:] == (3, 64, 64)
    assert_held_out_crops_avoid_train(dm)


def test_crop_positions_stay_inside_the_mask():
    inside = np.zeros((6, 7), bool)
    inside[1:5, 2:7] = True
    assert sorted(map(tuple, crop_positions(inside, 3).tolist())) == [(1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4)]


def test_bad_options_and_missing_scikit_image(monkeypatch):
    with pytest.raises(ConfigError, match="choose at least two distinct names"):
        TexturesDataModule(photos=["astronaut", "lena"])
    with pytest.raises(ConfigError, match="block_size"):
        TexturesDataModule(block_size=16)
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(DataError, match=r"pip install -e \.\[data\]"):
        small()
