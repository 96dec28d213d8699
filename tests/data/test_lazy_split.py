"""A split that is read from disk a batch at a time (never held whole) goes through encoding and evaluation and
gives the numbers of the same data held in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldm.autoencoders.identity import Identity
from ldm.data.base import StepDataModule, TensorImages
from ldm.data.digits import DigitsDataModule
from ldm.run.evaluation import evaluate
from ldm.run.train import encode_splits
from ldm.utils.config import plain
from tests.conftest import compose_cfg


class DiskSplit(torch.utils.data.Dataset):
    """Images in a memory-mapped .npy file: `__getitems__` reads only the rows asked for; `.images` does not exist."""

    def __init__(self, path, labels: torch.Tensor) -> None:
        self.array = np.load(path, mmap_mode="r")
        self.labels = labels
        self.reads = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]):
        self.reads += 1
        return torch.from_numpy(np.array(self.array[indices])), self.labels[indices]


class DiskDigits(StepDataModule):
    def __init__(self, memory: DigitsDataModule, root) -> None:
        super().__init__(batch_size=memory.batch_size)
        self.num_classes, self.class_names = memory.num_classes, memory.class_names
        for name, split in memory.splits.items():
            np.save(root / f"{name}.npy", split.images.numpy())
            self.splits[name] = DiskSplit(root / f"{name}.npy", split.labels)


@pytest.mark.slow
def test_evaluation_reads_a_split_batch_by_batch_and_agrees_with_memory(tmp_path):
    memory = DigitsDataModule(image_size=16)
    memory.setup()
    disk = DiskDigits(memory, tmp_path)
    assert isinstance(memory.split("test"), TensorImages) and not hasattr(disk.split("test"), "images")
    cfg = {**plain(compose_cfg(["debug=fast"]).metrics), "num_samples": 20}
    ae = Identity(image_size=16, in_channels=1, num_vis=8)
    results = [evaluate(ae, None, dm, cfg, {"name": "digits-16"}, str(tmp_path / "cache"), tmp_path / name,
                        torch.device("cpu")) for dm, name in ((memory, "memory"), (disk, "disk"))]
    assert disk.split("test").reads >= 1 and disk.split("train").reads >= 2  # read in batches, not once whole
    for key in ("recon/mse", "recon/psnr", "eval/fid_floor", "latent/prior_fid", "recon/class_accuracy"):
        assert results[1][key] == pytest.approx(results[0][key], rel=1e-5, abs=1e-9), key
    z = encode_splits(ae, disk, torch.device("cpu"), cfg["eval_batch"])
    assert torch.equal(z["test"]["mean"], memory.split("test").images)
