"""Any image dataset through Hugging Face `datasets`: from the hub, or from a local directory when offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ldm.data.base import InMemoryImageDataModule, resize_center_crop
from ldm.errors import ConfigError, DataError

SAVED = ("dataset_info.json", "state.json", "dataset_dict.json")  # what Dataset(Dict).save_to_disk writes
CHUNK = 1024  # images resized together


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError("data=hf needs the Hugging Face datasets package, which is not installed: "
                        "pip install -e .[data] (or make install)") from None
    return datasets


def open_dataset(path: str, name: Optional[str], split: str, cache_dir: Optional[str] = None) -> Any:
    """One split of a dataset as a `datasets.Dataset`.

    `path` is a directory written by `save_to_disk` (a Dataset, or a DatasetDict and then `split` of it), any
    other local directory or parquet file `load_dataset` reads (parquet, imagefolder, ...), or a hub id.
    `cache_dir` is where `load_dataset` keeps downloads and converted files (None: Hugging Face's default).
    """
    datasets = _datasets()
    local = Path(path).expanduser()
    where = f"data.path={path}"
    try:
        if local.is_dir() and any((local / f).is_file() for f in SAVED):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"{where} has no split {split!r} (splits: {', '.join(ds)}): set data.split")
                ds = ds[split]
            return ds
        if local.is_file() and local.suffix == ".parquet":
            return datasets.load_dataset("parquet", data_files=str(local), split="train", cache_dir=cache_dir)
        if local.exists():
            return datasets.load_dataset(str(local), name, split=split, cache_dir=cache_dir)
    except DataError:
        raise
    except Exception as e:  # datasets raises many types for unreadable or unexpected folders
        raise DataError(f"{where} could not be read as a dataset ({type(e).__name__}: {_first_line(e)}): point it "
                        f"at a save_to_disk, parquet or imagefolder directory") from None
    try:
        return datasets.load_dataset(path, name, split=split, cache_dir=cache_dir)
    except Exception as e:  # offline: ConnectionError, hub errors, ...; a wrong split: ValueError
        raise DataError(f"{where} is not a local directory and could not be loaded from the Hugging Face hub "
                        f"({type(e).__name__}: {_first_line(e)}): check data.path/data.name/data.split, or without a "
                        f"network save the dataset once with save_to_disk and point data.path at that folder") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "no message"


class HFDataModule(InMemoryImageDataModule):
    """Images of `image_column` (converted to `channels`, short side resized to `image_size`, centre-cropped)
    and labels of `label_column` (a ClassLabel gives the class names; other values are numbered in sorted
    order), all held in memory; train/val/test are cut from the loaded split (stratified when labelled)."""

    def __init__(self, path: Optional[str] = None, name: Optional[str] = None, split: str = "train",
                 image_column: str = "image", label_column: Optional[str] = "label",
                 max_images: Optional[int] = None, cache_dir: Optional[str] = None, image_size: int = 32,
                 channels: int = 3, **kwargs) -> None:
        super().__init__(image_size=image_size, channels=channels, **kwargs)
        if not path:
            raise ConfigError("data=hf needs data.path=<hub dataset id, or a local save_to_disk / parquet / "
                              "imagefolder directory>")
        if max_images is not None and max_images < 1:
            raise ConfigError(f"data.max_images={max_images} must be >= 1 (or null: all)")
        self.path, self.name, self.hf_split = str(path), name, split
        self.image_column, self.label_column, self.max_images = image_column, label_column, max_images
        self.cache_dir = str(Path(cache_dir).expanduser()) if cache_dir else None

    def _column(self, ds: Any, key: str, column: str) -> None:
        if column not in ds.column_names:
            raise DataError(f"data.{key}={column} is not a column of data.path={self.path} (columns: "
                            f"{', '.join(ds.column_names)}): set data.{key} to one of them")

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        ds = open_dataset(self.path, self.name, self.hf_split, self.cache_dir)
        self._column(ds, "image_column", self.image_column)
        if self.label_column:
            self._column(ds, "label_column", self.label_column)
        if len(ds) == 0:
            raise DataError(f"data.path={self.path} split {self.hf_split!r} holds no rows: choose another data.split")
        if self.max_images and self.max_images < len(ds):
            keep = np.sort(np.random.default_rng(self.split_seed).permutation(len(ds))[:self.max_images])
            ds = ds.select(keep.tolist())
        columns = [self.image_column] + ([self.label_column] if self.label_column else [])
        ds = ds.select_columns(columns)
        images = self._images(ds[self.image_column])
        if not self.label_column:
            return images, torch.full((len(images),), -1, dtype=torch.long)
        feature, values = ds.features[self.label_column], ds[self.label_column]
        if isinstance(feature, _datasets().ClassLabel):
            self.class_names = list(feature.names)
            labels = [-1 if v is None else int(v) for v in values]
        else:  # numbers, strings, booleans: numbered in sorted order, named by their value
            names = sorted({v for v in values if v is not None}, key=lambda v: (str(type(v)), v))
            index = {v: i for i, v in enumerate(names)}
            self.class_names = [str(v) for v in names]
            labels = [-1 if v is None else index[v] for v in values]
        return images, torch.tensor(labels, dtype=torch.long)

    def _images(self, column: list) -> torch.Tensor:
        """(N, C, size, size) in [-1, 1] from PIL images (or arrays); same-sized images are resized together."""
        from PIL import Image

        mode = "L" if self.channels == 1 else "RGB"
        arrays = []
        for i, im in enumerate(column):
            if im is None:
                raise DataError(f"row {i} of data.path={self.path} has no image in data.image_column="
                                f"{self.image_column}: drop such rows or choose another column")
            if not isinstance(im, Image.Image):
                try:
                    im = Image.fromarray(np.asarray(im).astype(np.uint8))
                except Exception:
                    raise DataError(f"data.image_column={self.image_column} of data.path={self.path} holds "
                                    f"{type(im).__name__} values, not images: choose the image column") from None
            arr = np.asarray(im.convert(mode), dtype=np.uint8)
            arrays.append(arr[..., None] if arr.ndim == 2 else arr)
        out = torch.empty(len(arrays), self.channels, self.image_size, self.image_size)
        by_shape: dict[tuple, list[int]] = {}
        for i, a in enumerate(arrays):
            by_shape.setdefault(a.shape, []).append(i)
        for idx in by_shape.values():
            for start in range(0, len(idx), CHUNK):
                part = idx[start:start + CHUNK]
                x = torch.from_numpy(np.stack([arrays[i] for i in part])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
                out[part] = resize_center_crop(x, self.image_size)
        return out
