"""`python train.py autoencoder=<row> debug=fast` in-process for every new row: the run-directory contract holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ldm.run import train
from tests.autoencoders.helpers import ROWS
from tests.conftest import resume_vs_straight

FAST = ["debug=fast", "logger=csv", "metrics.features=null"]  # feature metrics are tested with the evaluator


def metrics_of(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("row", [r for r in ROWS if r not in ("identity", "gan")])  # every row with a learnt latent
def test_row_runs_end_to_end(row, make_cfg):
    cfg = make_cfg(FAST + [f"autoencoder={row}"])
    train.main(cfg)
    m = metrics_of(cfg)
    assert m["status"] == "ok", m
    # gan_inversion_matched trains its encoder for encoder_steps batches after a GAN at the full budget
    extra = cfg.autoencoder.get("encoder_steps") or 0
    assert m["stage1/steps"] == cfg.stage1.max_steps + extra and m["stage1/latent_shape"] == "2x4x4"
    assert 0 < m["recon/psnr"] < 60 and m["stage1/val_loss"] > 0
    out = Path(cfg.paths.output_dir)
    for png in ("stage1_recon.png", "stage1_prior.png"):
        assert (out / png).stat().st_size > 100


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_gan_stage1_skips_reconstruction(make_cfg):
    """No encoder: stage 1 and its prior-sample grid run, recon/* is skipped, not crashed on."""
    cfg = make_cfg(FAST + ["autoencoder=gan", "stage=stage1"])
    train.main(cfg)
    m = metrics_of(cfg)
    assert m["status"] == "ok" and m["stage1/steps"] == cfg.stage1.max_steps
    assert not [k for k in m if k.startswith("recon/")]
    out = Path(cfg.paths.output_dir)
    assert (out / "stage1_prior.png").is_file() and not (out / "stage1_recon.png").exists()


def test_gan_with_stage2_is_refused_before_training(make_cfg, capsys):
    cfg = make_cfg(FAST + ["autoencoder=gan"])
    with pytest.raises(SystemExit) as e:
        train.main(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "autoencoder=bigan" in err and "autoencoder=gan_inversion" in err
    m = metrics_of(cfg)
    assert m["status"] == "failed" and "autoencoder=bigan" in m["error"]
    assert "stage1/steps" not in m  # refused before stage 1 trained: knowable from the config


@pytest.mark.slow
@pytest.mark.parametrize("row", ["vae_gan", "gan_inversion"])
def test_resume_across_the_schedule_switch_equals_uninterrupted(row, make_cfg):
    """3 batches + resume to 6 == 6 straight, the disc_start / stage-1b switch falling at batch 3.

    The schedule is a fraction of `autoencoder.max_steps`, pinned here so the short run keeps it.
    """
    import torch

    common = FAST + [f"autoencoder={row}", "autoencoder.max_steps=6", "stage=stage1", "stage1.val_every=3",
                     "logger=none"]
    straight, half, resumed, metrics = resume_vs_straight(make_cfg, common, "stage1", 6, 3, "ckpt_path")
    assert metrics["stage1/steps"] == 6
    a, b, h = (c["state_dict"] for c in (straight, resumed, half))
    for k, v in a.items():
        assert torch.equal(v, b[k]), k
    assert any(not torch.equal(h[k], v) for k, v in a.items() if v.is_floating_point())
