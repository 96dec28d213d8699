"""data=hf: a Hugging Face dataset written to disk by the test (no network) loads with labels and class names.

Importing `datasets` (pyarrow, pandas) alone takes ~2 s, so the tests that build a real dataset are in the slow
tier (with the command-line run in tests/test_cli.py); the fast tier checks the column errors on a stand-in."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

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
    with pytest.raises(DataError) as e:
        make("uoft-cs/cifar100")
    assert one_line(e.value) == ("data.image_column=image is not a column of data.path=uoft-cs/cifar100 (columns: "
                                 "img, fine_label, coarse_label): set data.image_column to one of them")
    with pytest.raises(DataError, match=r"data.label_column=label is not a column .*\(columns: img, fine_label"):
        make("uoft-cs/cifar100", image_column="img")
    with pytest.raises(ConfigError, match="data=hf needs data.path"):
        HFDataModule()
