"""Tracking read back from what the loggers wrote: TensorBoard event files and offline wandb run files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ldm.run import train
from ldm.utils.wandb_offline import summary
from tests.conftest import ROOT


@pytest.mark.slow
def test_tensorboard_gets_one_run_stage_scalars_hparams_final_metrics_and_figures(make_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cfg = make_cfg(["debug=fast", "logger=tensorboard"])
    train.main(cfg)
    run = Path(cfg.paths.output_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    (version,) = (run / "tensorboard").iterdir()  # one TensorBoard run for both stages
    events = EventAccumulator(str(version), size_guidance={"tensors": 0, "scalars": 0, "images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"stage1/train/loss", "stage1/val/loss", "stage2/train/loss", "stage2/val/loss"} <= scalars
    assert not any("-" in tag.split("/")[0] for tag in scalars)  # stage1/..., never stage1-train/...
    assert events.Scalars("final/gen/fid")[-1].value == pytest.approx(metrics["gen/fid"], rel=1e-6)
    assert {"final/samples", "final/recon", "final/class_hist"} <= set(events.Tags()["images"])
    hparams = {tag: plugin_data_pb2.HParamsPluginData.FromString(content)
               for tag, content in events.PluginTagToContent("hparams").items()}
    start = hparams["_hparams_/session_start_info"].session_start_info.hparams
    assert start["autoencoder/_target_"].string_value == "ldm.autoencoders.vae.VAE"
    assert start["params/stage1"].number_value == metrics["stage1/params"]
    assert start["backbone/ch"].number_value == cfg.backbone.ch
    shown = {m.name.tag for m in hparams["_hparams_/experiment"].experiment.metric_infos}
    assert {"final/gen/fid", "final/recon/psnr"} <= shown


@pytest.mark.slow
def test_wandb_offline_runs_are_named_grouped_configured_and_get_final_numbers_and_figures(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "train.py", "-m", "debug=fast", "logger=wandb", "seed=0,1",
                           f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for seed in (0, 1):
        job = sweep / str(seed)
        (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
        s = summary(run_file)
        assert s["name"] == f"seed={seed}"  # the swept choices only (not debug=fast, not where files go)
        assert s["group"] == "train" and s["tags"] == ["dev"]  # grouped by experiment (the task name)
        assert s["config"]["sweep"] == sweep.name
        assert {"autoencoder", "diffusion", "sampler", "seed", "params"} <= set(s["config"])
        assert s["config"]["seed"] == seed  # what a dashboard filters a sweep by: seed and the group choices
        assert s["config"]["choices"]["autoencoder"] == "vae" and s["config"]["choices"]["data"] == "digits"
        metrics = json.loads((job / "metrics.json").read_text())
        assert s["summary"]["gen/fid"] == pytest.approx(metrics["gen/fid"]) and s["summary"]["status"] == "ok"
        assert isinstance(s["summary"]["recon/psnr"], float)  # numbers, not strings
        assert {"stage1/train/loss", "stage2/val/loss"} <= s["history"]
        assert any(k.startswith("final/samples") for k in s["history"])
        assert any(k.startswith("final/metrics") for k in s["history"])
        media = {p.name.split("_")[0] for p in run_file.parent.rglob("files/media/images/final/*.png")}
        assert {"samples", "recon", "class"} <= media, media  # the final figures, as images
    # listed and filtered offline, as a dashboard would: one run is seed 1 of the vae row
    from ldm.utils import wandb_offline

    assert wandb_offline.main([str(sweep), "autoencoder=vae", "seed=1"]) == 0
    out = capsys.readouterr().out
    assert "| seed=1 |" in out and "1 of 2 runs match" in out


def test_a_sweep_jobs_name_is_its_swept_choices_only():
    """wandb run names: the keys the sweep varies, not the shared ones (debug=fast, a data path)."""
    from ldm.run.tracking import swept_name

    job = ["data=folder", "data.root=/some/where", "autoencoder=vae", "seed=1", "debug=fast"]
    sweep = ["data=folder", "data.root=/some/where", "autoencoder=ae,vae", "seed=range(3)", "debug=fast"]
    assert swept_name(job, sweep) == "autoencoder=vae,seed=1"
    assert swept_name(["seed=0"], ["seed=0"]) == ""  # nothing swept: the caller falls back to the overrides
