"""data=hf: a Hugging Face dataset written to disk by the test (no network) loads with labels and class names.

Importing `datasets` (pyarrow, pandas) alone takes ~2 s, so the tests that build a real dataset are in the slow
tier (with the command-line run in tests/test_cli.py); the fast tier checks the column errors on a stand-in."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ldm.data import hf
from ldm.data.hf import HFDataModule
from ldm.errors import ConfigError, DataError
from ldm.run.task import one_line

NAMES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """30 RGB images of three sizes, a ClassLabel column and a string column, saved with save_to_disk; the same
    rows as a DatasetDict with a train and a test split."""
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (12 + i % 3, 14, 3), dtype=np.uint8)) for i in range(30)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES),
                                  "note": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(30)],
                                     "note": ["a" if i < 10 else "b" for i in range(30)]}, features=features)
    root = tmp_path_factory.mktemp("hf")
    ds.save_to_disk(str(root / "flat"))
    datasets.DatasetDict({"train": ds, "test": ds.select(range(6))}).save_to_disk(str(root / "dict"))
    return root


def make(path, **kw) -> HFDataModule:
    dm = HFDataModule(path=str(path), **{"image_size": 8, "val_fraction": 0.2, "test_fraction": 0.2, **kw})
    dm.setup()
    return dm


@pytest.mark.slow
def test_saved_dataset_loads_with_labels_and_class_names(saved):
    dm = make(saved / "flat")
    assert dm.class_names == NAMES and dm.num_classes == 3
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 18, "val": 6, "test": 6}
    for split in dm.splits.values():  # stratified: every class equally often in every split
        assert split.labels.bincount(minlength=3).tolist() == [len(split) // 3] * 3
    x = dm.split("train").images
    assert x.shape[1:] == (3, 8, 8) and x.min() >= -1 and x.max() <= 1
    # a DatasetDict: the split asked for; a plain column: its values in sorted order name the classes
    test = make(saved / "dict", split="test", label_column="note", channels=1, val_fraction=0.0, test_fraction=0.0)
    assert len(test.split("train")) == 6 and test.class_names == ["a"] and test.split("train").images.shape[1] == 1
    assert test.split_sources == {"train": "test", "val": "cut from test", "test": "cut from test"}
    assert make(saved / "flat", label_column=None).num_classes == 0
    with pytest.raises(DataError) as e:
        make(saved / "flat", label_column="labels")
    assert one_line(e.value) == (f"data.label_column=labels is not a column of data.path={saved / 'flat'} "
                                 f"(columns: image, label, note): set data.label_column to one of them")
    with pytest.raises(DataError, match=r"has no split 'validation' \(splits: train, test\)"):
        make(saved / "dict", split="validation")


def test_a_missing_column_names_the_columns_that_exist(monkeypatch):
    stand_in = SimpleNamespace(column_names=["img", "fine_label", "coarse_label"])
    monkeypatch.setattr(hf, "open_dataset", lambda *args: stand_in)
    monkeypatch.setattr(hf, "split_names", lambda *args: [])  # not the hub: without a network it waits ~45 s
    with pytest.raises(DataError) as e:
        make("uoft-cs/cifar100")
    assert one_line(e.value) == ("data.image_column=image is not a column of data.path=uoft-cs/cifar100 (columns: "
                                 "img, fine_label, coarse_label): set data.image_column to one of them")
    with pytest.raises(DataError, match=r"data.label_column=label is not a column .*\(columns: img, fine_label"):
        make("uoft-cs/cifar100", image_column="img")
    with pytest.raises(ConfigError, match="data=hf needs data.path"):
        HFDataModule()


@pytest.mark.slow
def test_a_dataset_dict_keeps_its_own_splits_and_cuts_only_the_missing_one(saved):
    datasets = pytest.importorskip("datasets")
    kept = make(saved / "dict")  # train (30 rows) + test (the first 6): val is cut from train, test is the dataset's
    assert kept.split_sources == {"train": "train", "test": "test", "val": "cut from train"}
    assert {k: len(v) for k, v in kept.splits.items()} == {"train": 24, "val": 6, "test": 6}
    assert kept.split("test").labels.tolist() == [0, 1, 2, 0, 1, 2]  # rows 0..5 in order: the dataset's split
    assert "from=train: train, test: test, val: cut from train" in repr(kept)
    recut = make(saved / "dict", test_split=None)  # null: cut anyway, as from a single split
    assert {k: len(v) for k, v in recut.splits.items()} == {"train": 18, "val": 6, "test": 6}
    named = make(saved / "dict", val_split="test", test_split=None)
    assert named.split_sources["val"] == "test" and len(named.split("val")) == 6
    with pytest.raises(DataError, match=r"data.test_split=holdout: .* has no split 'holdout' \(splits: train, test\)"):
        make(saved / "dict", test_split="holdout")
    with pytest.raises(ConfigError, match="data.test_split=train is also the training split"):
        make(saved / "dict", test_split="train")
    # string labels numbered over all splits together: a value only the test split holds still has its index
    ds = datasets.Dataset.from_dict({"image": [np.full((4, 4), i * 20, np.uint8) for i in range(12)],
                                     "kind": ["x", "y"] * 5 + ["z", "z"]})
    datasets.DatasetDict({"train": ds.select(range(10)), "test": ds.select(range(10, 12))}).save_to_disk(
        str(saved / "strings"))
    dm = make(saved / "strings", label_column="kind", channels=1)
    assert dm.class_names == ["x", "y", "z"] and dm.split("test").labels.tolist() == [2, 2]


@pytest.mark.slow
def test_bad_labels_and_images_are_one_error_or_unknown(saved, tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    def save(name, **columns):
        datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / name))
        return tmp_path / name

    pixels = [np.full((4, 4), 50 * i, np.uint8) for i in range(4)]
    # NaN and None are unknown labels, as an unlabelled image is
    dm = make(save("nan", image=pixels, y=[0.0, float("nan"), 1.0, None]), label_column="y", channels=1,
              val_fraction=0.0, test_fraction=0.0)
    assert dm.class_names == ["0.0", "1.0"] and sorted(dm.split("train").labels.tolist()) == [-1, -1, 0, 1]
    with pytest.raises(DataError) as e:
        make(save("lists", image=pixels, y=[[0], [1], [0, 1], [1]]), label_column="y", channels=1)
    assert one_line(e.value).startswith("row 0 of data.path=") and "has a list in data.label_column=y" in str(e.value)
    # undecodable image bytes: counted, the first row named, as data=folder does for its files
    buf = __import__("io").BytesIO()
    Image.fromarray(pixels[0]).save(buf, format="PNG")
    good = {"bytes": buf.getvalue(), "path": None}
    broken = datasets.Dataset.from_dict({"image": [good, {"bytes": b"not a png", "path": None}, good,
                                                   {"bytes": b"\x89PNG torn", "path": None}]},
                                        features=datasets.Features({"image": datasets.Image()}))
    broken.save_to_disk(str(tmp_path / "broken"))
    with pytest.raises(DataError) as e:
        make(tmp_path / "broken", label_column=None, channels=1)
    assert "2 of 4 images in data.image_column=image" in one_line(e.value) and "row 1" in str(e.value)
    # float pixels in [0, 1] are scaled by 255 (they were all -1 before); in [0, 255] they are taken as they are
    ramp = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    unit = make(save("unit", image=[ramp] * 4), label_column=None, channels=1, image_size=4,
                val_fraction=0.0, test_fraction=0.0).split("train").images
    byte = make(save("byte", image=[np.rint(ramp * 255)] * 4), label_column=None, channels=1, image_size=4,
                val_fraction=0.0, test_fraction=0.0).split("train").images
    assert torch.equal(unit, byte) and unit.min() == -1 and unit.max() == 1
    with pytest.raises(DataError, match=r"float pixels in \[-1, 1\] \(or NaN\), neither \[0, 1\] nor \[0, 255\]"):
        make(save("signed", image=[ramp * 2 - 1] * 4), label_column=None, channels=1)
