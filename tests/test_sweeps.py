"""Stage reuse through the cache, two processes racing for one entry, a joblib multirun into a table."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ldm.analysis import tables
from ldm.run import train
from tests.conftest import ROOT, compose_cfg

BASE = ["debug=fast", "logger=none", "metrics.features=null"]


@pytest.mark.slow
def test_same_stage1_config_reuses_and_a_change_retrains(make_cfg):
    first = train.train(make_cfg(BASE, name="a"))
    assert first["stage1/reused"] is False and first["stage2/reused"] is False
    # a different sampler: the same stage 1 and stage 2 come from the cache
    cfg = make_cfg(BASE + ["sampler=dpmpp_2m"], name="b")
    second = train.train(cfg)
    assert second["stage1/reused"] is True and second["stage2/reused"] is True
    assert second["stage1/key"] == first["stage1/key"]
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"  # nothing trained in this run, yet it owns its checkpoints
    assert sorted(p.name for p in ckpts.glob("*/*.ckpt")) == ["last.ckpt", "last.ckpt"]
    assert second["stage1/source"] == second["stage2/source"] == "cache"
    assert second["stage1/steps"] == first["stage1/steps"] and second["stage1/wall_s"] == first["stage1/wall_s"]
    # another diffusion budget: stage 1 reused, stage 2 trained
    third = train.train(make_cfg(BASE + ["stage2.max_steps=3"], name="c"))
    assert third["stage1/reused"] is True and third["stage2/reused"] is False
    # another autoencoder setting: stage 1 trained again
    fourth = train.train(make_cfg(BASE + ["autoencoder.kl_weight=0.5"], name="d"))
    assert fourth["stage1/reused"] is False and fourth["stage1/key"] != first["stage1/key"]


def _race(out_dir: str, cache_dir: str, queue) -> None:
    cfg = compose_cfg(BASE + ["stage=stage1", f"paths.cache_dir={cache_dir}"], output_dir=Path(out_dir))
    cfg.paths.cache_dir = cache_dir
    m = train.train(cfg)
    queue.put((m["stage1/reused"], m["stage1/key"]))


@pytest.mark.slow
def test_two_processes_racing_for_one_entry(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    cache = str(tmp_path / "cache")
    procs = [ctx.Process(target=_race, args=(str(tmp_path / f"run{i}"), cache, queue)) for i in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(r[0] for r in results) == [False, True]  # exactly one trained, the other waited and reused
    assert results[0][1] == results[1][1]
    entries = list((tmp_path / "cache" / "stage1").glob("*/autoencoder.ckpt"))
    assert len(entries) == 1 and not list((tmp_path / "cache").rglob("*.tmp"))
    # the process that lost the race owns the very same weights in its own run directory
    a, b = (torch.load(tmp_path / f"run{i}" / "checkpoints/stage1/last.ckpt", weights_only=True)["state_dict"]
            for i in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_joblib_multirun_gives_a_table(tmp_path):
    """2 autoencoders x 2 seeds through the joblib launcher -> a table with two rows, n=2 each."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           "autoencoder=vae,ae", "seed=0,1", *BASE, "threads=1", f"hydra.sweep.dir={sweep}",
                           f"paths.cache_dir={tmp_path / 'cache'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    t = tables.build(sweep, columns=["recon/psnr", "stage2/val_loss"])
    assert [r["n"] for r in t["rows"]] == [2, 2] and not t["bad"]
    assert {r["group"] for r in t["rows"]} == {(("autoencoder", "vae"),), (("autoencoder", "ae"),)}
    assert (sweep / "table.md").is_file() and (sweep / "table.tex").is_file()


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    """gan cannot encode, so its job fails at stage 2; the vae job after it still runs and the table lists both."""
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "train.py", "-m", "autoencoder=gan,vae", *BASE, "stage1.max_steps=2",
                           f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    gan = json.loads((sweep / "0" / "metrics.json").read_text())
    assert gan["status"] == "failed" and "bigan" in gan["error"] and "gan_inversion" in gan["error"]
    assert json.loads((sweep / "1" / "metrics.json").read_text())["status"] == "ok"
    t = tables.build(sweep, columns=["recon/psnr"])
    assert [b["job"] for b in t["bad"]] == ["0"]


@pytest.mark.slow
def test_an_optuna_search_writes_its_result_and_continues_in_sqlite(tmp_path):
    """hparams_search=vae_optuna: 2 TPE trials of debug=fast; the best value is the best trial's gen/fid. With
    hydra.sweeper.storage=sqlite:///..., a second search of the same study adds its trial to the first search's (TPE
    then samples from all of them), so a stopped search continues instead of starting over."""
    import yaml

    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    for n, name in ((2, "search"), (1, "again")):
        proc = subprocess.run([sys.executable, "train.py", "-m", "hparams_search=vae_optuna", "debug=fast",
                               "logger=none", f"hydra.sweeper.n_trials={n}", f"hydra.sweeper.storage={storage}",
                               f"hydra.sweep.dir={tmp_path / name}", f"paths.cache_dir={tmp_path / 'cache'}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        if name == "search":
            sweep = tmp_path / name
            result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
            assert set(result["best_params"]) == {"autoencoder.kl_weight", "backbone.latent_channels", "diffusion"}
            fids = [json.loads((sweep / str(i) / "metrics.json").read_text())["gen/fid"] for i in range(2)]
            assert result["best_value"] == pytest.approx(min(fids))
            best = fids.index(min(fids))
            overrides = (sweep / str(best) / ".hydra/overrides.yaml").read_text()
            assert f"backbone.latent_channels={result['best_params']['backbone.latent_channels']}" in overrides
    study = optuna.load_study(study_name="vae_latent", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    fid = json.loads((tmp_path / "again" / "0" / "metrics.json").read_text())["gen/fid"]
    assert study.trials[2].value == pytest.approx(fid)  # the second search's trial is the study's third
