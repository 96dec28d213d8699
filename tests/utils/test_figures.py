"""Image grids go to the run directory and to each logger that takes images, chosen by the logger's class."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ldm.utils.image_log import log_grid


def test_grid_reaches_tensorboard_and_the_run_directory_csv_takes_none(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb, csv = TensorBoardLogger(tmp_path / "tb"), CSVLogger(tmp_path / "csv")
    trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path), global_step=7, loggers=[tb, csv])
    latest = log_grid(trainer, "stage1_prior", torch.rand(4, 1, 8, 8) * 2 - 1, nrow=2)
    assert latest == tmp_path / "stage1_prior.png" and (tmp_path / "images/stage1_prior/step0000007.png").is_file()
    tb.experiment.flush()
    events = EventAccumulator(str(tb.log_dir))
    events.Reload()
    assert events.Tags()["images"] == ["stage1_prior"] and events.Images("stage1_prior")[0].step == 7
    assert not list((tmp_path / "csv").rglob("*.png"))


def test_only_rank_zero_writes(tmp_path):
    trainer = SimpleNamespace(is_global_zero=False, default_root_dir=str(tmp_path), global_step=0, loggers=[])
    assert log_grid(trainer, "x", torch.zeros(1, 1, 4, 4)) is None and not list(tmp_path.iterdir())
