"""The real-data grid a claims report puts beside each row's samples (ldm.run.real_images): the first 64 test
images of the dataset a job's resolved config names, laid out as the job's samples.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from ldm.run.real_images import grid
from ldm.utils.config import build
from ldm.utils.images import save_grid
from tests.conftest import compose_cfg


def test_the_grid_is_the_first_64_test_images_of_the_configs_dataset(tmp_path):
    cfg = compose_cfg(["data=digits", "seed=3"], output_dir=tmp_path / "run")
    config = tmp_path / "config.yaml"
    OmegaConf.save(cfg, config, resolve=False)  # as a run's .hydra/config.yaml holds it: ${seed} unresolved
    png = grid(config, tmp_path / "real.png")
    test = build(cfg.data).split("test")
    want = save_grid(test.images[:64], tmp_path / "want.png", nrow=8, title="real test images (the first 64)")
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(want)))
    other = tmp_path / "other.yaml"
    other.write_text("seed: 0\n")  # a config that names no dataset: nothing to draw
    assert grid(other, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    assert isinstance(png, Path)
