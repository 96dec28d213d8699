"""Where a CUDA GPU exists: `trainer=gpu` end to end and evaluation on the GPU; skipped elsewhere (CI has none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ldm.run import train
from ldm.run.preflight import eval_device

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "default"])
def test_eval_device_follows_the_trainer(trainer, make_cfg):
    device = eval_device(make_cfg([f"trainer={trainer}"]))
    wants_gpu = trainer != "cpu" and torch.cuda.is_available()
    assert device.type == ("cuda" if wants_gpu else "cpu")


@requires_gpu
def test_trainer_gpu_runs_end_to_end(make_cfg):
    cfg = make_cfg(["debug=fast", "logger=none", "trainer=gpu"])
    train.main(cfg)
    m = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert m["status"] == "ok" and m["stage1/steps"] == cfg.stage1.max_steps and m["stage2/steps"] > 0
    assert m["gen/nfe"] == cfg.sampler.steps and m["eval/evaluator_acc"] > 0
