"""Any image dataset through Hugging Face `datasets`: from the hub, or from a local directory when offline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ldm.data.base import InMemoryImageDataModule, resize_center_crop, split_indices
from ldm.errors import ConfigError, DataError

SAVED = ("dataset_info.json", "state.json", "dataset_dict.json")  # what Dataset(Dict).save_to_disk writes
CHUNK = 1024  # images resized together
OWN_SPLITS = {"val": ("validation", "val", "valid", "dev"), "test": ("test",)}  # what "auto" looks for


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


def split_names(path: str, name: Optional[str], cache_dir: Optional[str] = None) -> list[str]:
    """The splits the dataset itself defines ([] for a single saved Dataset or parquet file, or where they
    cannot be listed, e.g. a hub id without a network)."""
    datasets = _datasets()
    local = Path(path).expanduser()
    if local.is_dir() and (local / "dataset_dict.json").is_file():
        try:
            return [str(s) for s in json.loads((local / "dataset_dict.json").read_text())["splits"]]
        except Exception:  # unreadable: open_dataset reports it
            return []
    if (local.is_dir() and any((local / f).is_file() for f in SAVED)) or local.is_file():
        return []
    try:
        return [str(s) for s in datasets.get_dataset_split_names(str(local) if local.exists() else path, name,
                                                                   cache_dir=cache_dir)]
    except Exception:  # offline hub ids, folders without split structure: no splits of their own
        return []


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "no message"


class HFDataModule(InMemoryImageDataModule):
    """Images of `image_column` (converted to `channels`, short side resized to `image_size`, centre-cropped)
    and labels of `label_column` (a ClassLabel gives the class names; other values are numbered in sorted
    order), all held in memory.

    train is the dataset's split `split`. val and test are the dataset's own splits where it has them
    (`val_split`/`test_split`: "auto" looks for validation/val/valid/dev and test; a name asks for that split;
    null always cuts), else they are cut from `split` by `val_fraction`/`test_fraction` (stratified when
    labelled). `split_sources` says where each came from."""

    def __init__(self, path: Optional[str] = None, name: Optional[str] = None, split: str = "train",
                 val_split: Optional[str] = "auto", test_split: Optional[str] = "auto",
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
        self.val_split, self.test_split = val_split, test_split
        self.image_column, self.label_column, self.max_images = image_column, label_column, max_images
        self.cache_dir = str(Path(cache_dir).expanduser()) if cache_dir else None
        self.split_sources: dict[str, str] = {}

    def _column(self, ds: Any, key: str, column: str) -> None:
        if column not in ds.column_names:
            raise DataError(f"data.{key}={column} is not a column of data.path={self.path} (columns: "
                            f"{', '.join(ds.column_names)}): set data.{key} to one of them")

    def _own_split(self, which: str, names: list[str]) -> Optional[str]:
        """The dataset's split that serves as `which` (val/test), or None: cut it from the training split."""
        want = self.val_split if which == "val" else self.test_split
        if want is None:
            return None
        if want == "auto":
            return next((n for n in OWN_SPLITS[which] if n in names and n != self.hf_split), None)
        if want not in names:
            raise DataError(f"data.{which}_split={want}: data.path={self.path} has no split {want!r} (splits: "
                            f"{', '.join(names) or 'none of its own'}): name one of them, auto, or null to cut "
                            f"{which} from data.split={self.hf_split}")
        if want == self.hf_split:
            raise ConfigError(f"data.{which}_split={want} is also the training split (data.split): name "
                              f"another split, or null to cut {which} from it")
        return str(want)

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        names = split_names(self.path, self.name, self.cache_dir)
        own = {w: self._own_split(w, names) for w in ("val", "test")}
        read = {"train": self._read(self.hf_split)}
        read.update({w: self._read(s) for w, s in own.items() if s})
        labels = self._labels(read)
        parts = {w: (self._images(cols[0], w), labels[w]) for w, cols in read.items()}
        cut = [w for w in ("val", "test") if not own[w]]
        self.split_sources = {"train": self.hf_split, **{w: s for w, s in own.items() if s}}
        if cut:
            images, y = parts.pop("train")
            labelled = len(y) > 0 and bool((y >= 0).all())
            idx = split_indices(len(images), self.val_fraction if "val" in cut else 0.0,
                                self.test_fraction if "test" in cut else 0.0, self.split_seed,
                                labels=y if labelled else None)
            parts.update({k: (images[v], y[v]) for k, v in idx.items() if k == "train" or k in cut})
            self.split_sources.update({w: f"cut from {self.hf_split}" for w in cut})
        return {k: parts[k] for k in ("train", "val", "test")}

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images and labels of data.split (load_splits adds the dataset's own val/test splits)."""
        read = {"train": self._read(self.hf_split)}
        return self._images(read["train"][0], "train"), self._labels(read)["train"]

    def _read(self, split: str) -> tuple[Any, Optional[list], Any]:
        """(images column, raw label values or None, label feature) of one split, capped at max_images."""
        ds = open_dataset(self.path, self.name, split, self.cache_dir)
        self._column(ds, "image_column", self.image_column)
        if self.label_column:
            self._column(ds, "label_column", self.label_column)
        if len(ds) == 0:
            raise DataError(f"data.path={self.path} split {split!r} holds no rows: choose another data.split")
        if self.max_images and self.max_images < len(ds):
            keep = np.sort(np.random.default_rng(self.split_seed).permutation(len(ds))[:self.max_images])
            ds = ds.select(keep.tolist())
        columns = [self.image_column] + ([self.label_column] if self.label_column else [])
        ds = ds.select_columns(columns)
        feature = ds.features[self.image_column]
        if isinstance(feature, _datasets().Image) and feature.decode:
            ds = ds.cast_column(self.image_column, _datasets().Image(decode=False))  # decoded here, row by row
        if not self.label_column:
            return ds[self.image_column], None, None
        return ds[self.image_column], ds[self.label_column], ds.features[self.label_column]

    def _labels(self, read: dict[str, tuple]) -> dict[str, torch.Tensor]:
        """Labels per split; one numbering over all splits (a ClassLabel's, else the sorted distinct values).
        None and NaN are unknown labels (-1); a list or other unhashable value is an error."""
        if not self.label_column:
            return {w: torch.full((len(cols[0]),), -1, dtype=torch.long) for w, cols in read.items()}
        values = {w: [None if isinstance(v, float) and math.isnan(v) else v for v in cols[1]]
                  for w, cols in read.items()}
        for w, vs in values.items():
            for i, v in enumerate(vs):
                if not (v is None or isinstance(v, (int, float, str, bool, np.integer, np.floating))):
                    raise DataError(f"row {i} of data.path={self.path} split {self._split_of(w)!r} has a "
                                    f"{type(v).__name__} in data.label_column={self.label_column}, not one "
                                    f"label: choose a column of single labels (class ids or names), or "
                                    f"data.label_column=null")
        feature = read["train"][2]
        if isinstance(feature, _datasets().ClassLabel):
            self.class_names = list(feature.names)
            return {w: torch.tensor([-1 if v is None else int(v) for v in vs], dtype=torch.long)
                    for w, vs in values.items()}
        names = sorted({v for vs in values.values() for v in vs if v is not None}, key=lambda v: (str(type(v)), v))
        index = {v: i for i, v in enumerate(names)}
        self.class_names = [str(v) for v in names]
        return {w: torch.tensor([-1 if v is None else index[v] for v in vs], dtype=torch.long)
                for w, vs in values.items()}

    def _split_of(self, which: str) -> str:
        if which == "train":
            return self.hf_split
        return str(self.val_split if which == "val" else self.test_split)

    def _decode(self, column: list, which: str) -> list[np.ndarray]:
        """uint8 (H, W, C) arrays from encoded images ({bytes, path}), PIL images or arrays: undecodable rows
        are counted into one error, as data=folder does; float arrays are read as [0, 1] (or [0, 255] where
        any value is above 1), the range a whole column shares."""
        import io

        from PIL import Image

        mode = "L" if self.channels == 1 else "RGB"
        where = f"data.image_column={self.image_column} of data.path={self.path} split {self._split_of(which)!r}"
        arrays: list[Optional[np.ndarray]] = []
        bad: list[tuple[int, BaseException]] = []
        floats: list[int] = []
        for i, im in enumerate(column):
            if im is None:
                raise DataError(f"row {i} of data.path={self.path} split {self._split_of(which)!r} has no image in "
                                f"data.image_column={self.image_column}: drop such rows or choose another column")
            if isinstance(im, dict) and ("bytes" in im or "path" in im):  # an Image feature, not decoded
                try:
                    src = io.BytesIO(im["bytes"]) if im.get("bytes") is not None else im["path"]
                    with Image.open(src) as f:
                        im = f.convert(mode)
                except Exception as e:  # PIL raises many types for damaged or missing files
                    bad.append((i, e))
                    arrays.append(None)
                    continue
            if isinstance(im, Image.Image):
                a = np.asarray(im.convert(mode), dtype=np.uint8)
                arrays.append(a[..., None] if a.ndim == 2 else a)
                continue
            try:
                a = np.asarray(im)
                if a.dtype == object or a.dtype.kind not in "uifb" or a.ndim not in (2, 3):
                    raise TypeError
            except Exception:
                raise DataError(f"{where} holds {type(im).__name__} values, not images: choose the image "
                                f"column") from None
            if a.dtype.kind == "f":
                floats.append(i)
            arrays.append(a)
        if bad:
            first, err = bad[0]
            raise DataError(f"{len(bad)} of {len(column)} images in {where} could not be decoded (first: row "
                            f"{first}: {type(err).__name__}): remove or replace those rows")
        scale = 1.0
        if floats:
            lo = min(float(np.nanmin(arrays[i])) for i in floats)
            hi = max(float(np.nanmax(arrays[i])) for i in floats)
            if lo < 0 or hi > 255 or any(np.isnan(arrays[i]).any() for i in floats):
                raise DataError(f"{where} holds float pixels in [{lo:g}, {hi:g}] (or NaN), neither [0, 1] nor "
                                f"[0, 255]: rescale the column")
            scale = 255.0 if hi <= 1.0 else 1.0
        out = []
        for i, a in enumerate(arrays):
            if a.dtype != np.uint8:
                if a.dtype.kind in "iu" and (a.min() < 0 or a.max() > 255):
                    raise DataError(f"row {i} of {where} holds integer pixels outside [0, 255]: rescale the column")
                a = np.clip(np.rint(a.astype(np.float64) * (scale if a.dtype.kind == "f" else 1.0)), 0, 255)
                a = a.astype(np.uint8)
            try:
                a = np.asarray(Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[-1] == 1 else a)
                               .convert(mode), dtype=np.uint8)
            except Exception:
                raise DataError(f"row {i} of {where} is an array of shape {a.shape}, not an (H, W) or (H, W, C) "
                                f"image: choose the image column") from None
            out.append(a[..., None] if a.ndim == 2 else a)
        return out

    def _images(self, column: list, which: str = "train") -> torch.Tensor:
        """(N, C, size, size) in [-1, 1]; same-sized images are resized together."""
        arrays = self._decode(column, which)
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

    def __repr__(self) -> str:
        text = super().__repr__()
        if not self.split_sources:
            return text
        return text[:-1] + ", from=" + ", ".join(f"{k}: {v}" for k, v in self.split_sources.items()) + ")"
