"""Folder DataModule: built from PNGs written to a temp dir; each bad input gets its own clear error."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.data.folder import FolderDataModule
from ldm.errors import DataError


def write_png(path, size=(12, 10), value=None, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))  # stable across processes (unlike hash())
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    arr = np.full(shape, value, np.uint8) if value is not None else rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(arr, mode).save(path)


def make_dm(root, **kw):
    kw = {"image_size": 8, "channels": 3, "batch_size": 2, "val_fraction": 0.2, "test_fraction": 0.2, **kw}
    dm = FolderDataModule(root=str(root), **kw)
    dm.setup()
    return dm


def test_class_folders_give_labels(tmp_path):
    for c in ("cat", "dog"):
        for i in range(5):
            write_png(tmp_path / c / f"{c}{i}.png")
    dm = make_dm(tmp_path)
    assert dm.num_classes == 2
    assert sum(len(s) for s in dm.splits.values()) == 10
    labels = torch.cat([s.labels for s in dm.splits.values()])
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 5
    x = dm.split("train").images
    assert x.shape[1:] == (3, 8, 8) and x.min() >= -1 and x.max() <= 1


def test_flat_folder_is_unlabelled_grayscale_and_jpeg(tmp_path):
    for i in range(4):
        write_png(tmp_path / f"a{i}.png")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "b.jpg")
    dm = make_dm(tmp_path, channels=1, val_fraction=0.0, test_fraction=0.0)
    assert dm.num_classes == 0 and (dm.split("train").labels == -1).all()
    assert dm.split("train").images.shape == (5, 1, 8, 8)


def test_values_map_to_range(tmp_path):
    write_png(tmp_path / "black.png", value=0)
    write_png(tmp_path / "white.png", value=255)
    dm = make_dm(tmp_path, val_fraction=0.0, test_fraction=0.0, batch_size=1)
    x = dm.split("train").images
    assert sorted(x.flatten(1).mean(1).tolist()) == [-1.0, 1.0]


def test_resize_then_center_crop(tmp_path):
    # 20x10 image whose left and right quarters are black, centre white: the crop keeps the centre
    arr = np.zeros((10, 20), np.uint8)
    arr[:, 5:15] = 255
    Image.fromarray(arr, "L").save(tmp_path / "wide.png")
    dm = make_dm(tmp_path, channels=1, image_size=10, val_fraction=0.0, test_fraction=0.0, batch_size=1)
    x = dm.split("train").images
    assert x.shape == (1, 1, 10, 10) and (x > 0.99).all()


def test_missing_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        make_dm(tmp_path / "nope")


def test_empty_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="holds no PNG/JPEG"):
        make_dm(tmp_path)


def test_unreadable_files_are_counted(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"ok{i}.png")
    (tmp_path / "broken1.png").write_bytes(b"not a png")
    (tmp_path / "broken2.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError) as e:
        make_dm(tmp_path)
    msg = str(e.value)
    assert "2 of 5" in msg and str(tmp_path) in msg and "\n" not in msg
