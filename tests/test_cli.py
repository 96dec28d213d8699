"""The real command line, as a user runs it (subprocesses; slow tier): one `error:` line and exit 2 before any
training for bad input, a diverged run exits 0, and a run killed by the OS (SIGKILL) mid stage 1 or mid stage 2
is continued with `resume=<run>` to weights and metrics bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ldm.rundir import read_status
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
BASE = ["debug=fast", "logger=none", "threads=1"]


def train(args: list[str], run_dir: Path, cache: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *BASE, *args, f"hydra.run.dir={run_dir}",
                           f"paths.cache_dir={cache}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          **{"env": ENV, **kw})


@pytest.mark.parametrize("override, start", [
    ("backbone.f=3", "error: backbone.f=3 must be a power of two"),
    ("data.channels=2", "error: data.channels=2 must be 1 (grayscale) or 3 (RGB)"),
    ("stage1.max_steps=0", "error: stage1.max_steps=0 must be an integer >= 1"),
    ("stage2.batch_size=5000", "error: stage2.batch_size=5000 is larger than the training split"),
    ("autoencoder=gan", "error: autoencoder=gan has no encoder"),
    ("ckpt_path=/nonexistent/last.ckpt", "error: ckpt_path=/nonexistent/last.ckpt is not a file"),
])
def test_bad_input_is_one_error_line_and_exit_2_before_training(override, start, tmp_path):
    run = tmp_path / "run"
    proc = train([override], run, tmp_path / "cache")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(start), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "stage1/steps" not in metrics


def test_a_diverged_run_exits_0(tmp_path):
    proc = train(["metrics.features=null", "autoencoder.optimizer.lr=1e30"], tmp_path / "run", tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "diverged"


# a budget long enough to be killed in the middle of, checkpoints every 10 batches; caches off, so that
# every run really trains what it reports
LONG = ["stage1.max_steps=60", "stage1.val_every=10", "stage2.max_steps=60", "stage2.val_every=10",
        "cache.stage1=false", "cache.stage2=false"]


def kill_when(run: Path, stage: str, cache: Path, sig: int = signal.SIGKILL, env: dict = ENV) -> int:
    """Start a run, send it `sig` as soon as `stage` wrote its first last.ckpt; returns that checkpoint's step.
    SIGKILL ends the process at once (-9); SIGTERM and SIGINT are answered by the run itself: exit 128 + sig."""
    proc = subprocess.Popen([sys.executable, "train.py", *BASE, *LONG, f"hydra.run.dir={run}",
                             f"paths.cache_dir={cache}"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = run / "checkpoints" / stage / "last.ckpt"
    deadline = time.time() + 300
    while not ckpt.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    assert proc.returncode == (-sig if sig == signal.SIGKILL else 128 + sig)
    return torch.load(ckpt, map_location="cpu", weights_only=True)["loops"]["fit_loop"][
        "epoch_loop.batch_progress"]["total"]["completed"]


def state(run: Path, stage: str) -> dict:
    return torch.load(run / "checkpoints" / stage / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("straight")
    proc = train(LONG, root / "run", root / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "run"


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(stage, uninterrupted, tmp_path):
    killed = tmp_path / "killed"
    step = kill_when(killed, stage, tmp_path / "cache")
    assert 0 < step < 60  # killed in the middle of the stage
    assert read_status(killed / "metrics.json")["status"] == "interrupted"
    proc = train([*LONG, f"resume={killed}"], tmp_path / "resumed", tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = tmp_path / "resumed"
    m, ref = (json.loads((r / "metrics.json").read_text()) for r in (resumed, uninterrupted))
    assert m["status"] == "ok"
    if stage == "stage1":  # stage 1 continued from its last checkpoint, stage 2 trained as usual
        assert (m["stage1/source"], m["stage2/source"]) == ("resumed", "trained")
    else:  # the finished stage 1 reused, stage 2 continued
        assert (m["stage1/source"], m["stage2/source"]) == ("checkpoint", "resumed")
    for s in ("stage1", "stage2"):
        a, b = state(uninterrupted, s), state(resumed, s)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), s
    for key in ("recon/psnr", "recon/rfid", "latent/prior_fid", "gen/fid", "gen/kid", "gen/classes_covered",
                "stage2/val_loss"):
        assert m[key] == ref[key], key


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_run_as_interrupted_and_resume_is_bit_identical(sig, uninterrupted, tmp_path):
    """SIGTERM (a scheduler's time limit) and SIGINT (Ctrl-C) mid stage 1: exit 128 + signal, status interrupted
    with the signal named (not exit 0 with a `running` file), and resume= ends bit-identical to a straight run."""
    stopped = tmp_path / "stopped"
    step = kill_when(stopped, "stage1", tmp_path / "cache", sig)
    assert 0 < step < 60
    record = json.loads((stopped / "metrics.json").read_text())
    assert record["status"] == "interrupted" and signal.Signals(sig).name in record["error"]
    proc = train([*LONG, f"resume={stopped}"], tmp_path / "resumed", tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = state(uninterrupted, "stage2"), state(tmp_path / "resumed", "stage2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    m, ref = (json.loads((r / "metrics.json").read_text()) for r in (tmp_path / "resumed", uninterrupted))
    assert all(m[k] == ref[k] for k in ("recon/psnr", "gen/fid", "stage2/val_loss"))


def test_a_requeued_slurm_job_continues_in_its_own_directory(uninterrupted, tmp_path):
    """SLURM's time limit (SIGTERM) mid stage 1, then the scheduler requeues the job: the same command, in the same
    directory, with SLURM_RESTART_COUNT=1. It continues from the stopped attempt's checkpoint (no resume= typed)
    and ends bit-identical to a straight run; a run in that directory that was not this job's stays refused."""
    run = tmp_path / "job"
    first = {**ENV, "SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "0"}
    step = kill_when(run, "stage1", tmp_path / "cache", signal.SIGTERM, env=first)
    assert 0 < step < 60 and read_status(run / "metrics.json")["status"] == "interrupted"
    assert json.loads((run / "metrics.json").read_text())["slurm_job"] == "4242"
    proc = train(LONG, run, tmp_path / "cache", env={**first, "SLURM_RESTART_COUNT": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "requeued SLURM job: continuing the stopped run in" in proc.stdout + proc.stderr
    m, ref = (json.loads((r / "metrics.json").read_text()) for r in (run, uninterrupted))
    assert m["status"] == "ok" and m["stage1/source"] == "resumed"
    for s in ("stage1", "stage2"):
        a, b = state(uninterrupted, s), state(run, s)
        assert all(torch.equal(a[k], b[k]) for k in a), s
    assert all(m[k] == ref[k] for k in ("recon/psnr", "gen/fid", "stage2/val_loss"))
    again = train(LONG, run, tmp_path / "cache", env={**first, "SLURM_RESTART_COUNT": "2"})  # finished: kept
    assert again.returncode == 2 and "already holds a run (status ok" in again.stderr
    assert json.loads((run / "metrics.json").read_text()) == m


def test_sigterm_stops_a_whole_sweep(tmp_path):
    """A sweep (Hydra's basic launcher) sent SIGTERM during its first job: that job is interrupted, no later job
    starts, the sweep exits 143; rerun into a new directory, it gives the table an uninterrupted sweep gives."""
    sweep = tmp_path / "sweep"
    args = [sys.executable, "train.py", "-m", *BASE, *LONG, "seed=0,1", f"paths.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.Popen([*args, f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (sweep / "0" / "checkpoints" / "stage1" / "last.ckpt").is_file() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert read_status(sweep / "0" / "metrics.json")["status"] == "interrupted"
    assert not (sweep / "1").exists()
    tables = []
    for name in ("again", "straight"):
        done = subprocess.run([*args, f"hydra.sweep.dir={tmp_path / name}"], cwd=ROOT, env=ENV, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        subprocess.run([sys.executable, "evaluate.py", f"table.dir={tmp_path / name}"], cwd=ROOT, env=ENV,
                       check=True, capture_output=True, timeout=300)
        table = (tmp_path / name / "table.csv").read_text().splitlines()
        header = table[0].split(",")
        keep = [i for i, h in enumerate(header) if "wall_s" not in h]  # timings differ between any two runs
        tables.append([[row.split(",")[i] for i in keep] for row in table])
    assert tables[0] == tables[1]


def test_a_second_sweep_into_a_used_directory_is_refused_and_the_first_kept(tmp_path):
    """Case 3 of the faults issue: a second sweep into a folder that holds a finished sweep exits 2 with one error
    line, starts no job, and leaves every record of the first sweep byte-identical."""
    sweep = tmp_path / "sweep"
    args = [sys.executable, "train.py", "-m", *BASE, "stage=stage1", f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.sweep.dir={sweep}"]
    first = subprocess.run([*args, "autoencoder=vae", "seed=0,1"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: p.read_bytes() for p in sweep.glob("*/metrics.json")}
    second = subprocess.run([*args, "autoencoder=ae", "seed=0,1"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 2, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already holds a run (status ok" in errors[0]
    assert len(before) == 2 and {p: p.read_bytes() for p in sweep.glob("*/metrics.json")} == before


SEARCH = """# @package _global_
defaults:
  - vae_optuna
  - _self_
optimized_metric: recon/psnr
hydra:
  sweeper:
    n_trials: 4
    direction: maximize
    params:
      autoencoder.optimizer.lr: choice(1e-3, 1e30)
"""


def test_a_search_with_diverging_trials_completes(tmp_path):
    """An Optuna search where some trials diverge (lr 1e30): each is recorded as failed and the study goes on to
    its best trial among the others (max_failure_rate in conf/hparams_search/), exit 0."""
    (tmp_path / "conf" / "hparams_search").mkdir(parents=True)
    (tmp_path / "conf" / "hparams_search" / "diverge.yaml").write_text(SEARCH)
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "train.py", "-m", "hparams_search=diverge",
                           f"hydra.searchpath=[file://{tmp_path / 'conf'}]", *BASE, "stage=stage1",
                           "metrics.features=null", f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'c'}"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = [read_status(sweep / str(i) / "metrics.json")["status"] for i in range(4)]
    assert "diverged" in statuses and "ok" in statuses, statuses
    best = (sweep / "optimization_results.yaml").read_text()
    assert "autoencoder.optimizer.lr: 0.001" in best


def test_ddp_cpu_with_the_default_metrics_evaluates_like_one_process(tmp_path):
    """trainer=ddp_cpu (2 gloo processes): rank 0 evaluates with metrics that do not sync; evaluate.py in one
    process gives the same numbers from the run's checkpoints."""
    run = tmp_path / "ddp"
    proc = train(["trainer=ddp_cpu"], run, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "ok" and m["stage1/steps"] == 4 and m["stage2/steps"] == 4
    assert proc.stderr.count("run directory:") + proc.stdout.count("run directory:") == 1  # rank 0 reports once
    ev = subprocess.run([sys.executable, "evaluate.py", f"run_dir={run}", f"out_dir={tmp_path / 'eval'}",
                         f"paths.cache_dir={tmp_path / 'cache'}", "metrics.features.steps=40",
                         "metrics.interp_pairs=4", "metrics.interp_steps=4", "metrics.kid_subsets=10"],
                        cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert ev.returncode == 0, ev.stderr[-2000:]
    single = json.loads((tmp_path / "eval" / "eval.json").read_text())
    for key in ("recon/psnr", "recon/rfid", "latent/prior_fid", "gen/fid", "gen/kid", "gen/precision",
                "gen/classes_covered", "eval/fid_floor"):
        assert single[key] == pytest.approx(m[key], rel=1e-5, abs=1e-8), key


def test_the_stage_cache_works_under_ddp_cpu(tmp_path):
    """Under DDP rank 0 looks a stage up and every rank follows it: the same DDP run again takes both stages from
    the cache (no rank trains) with the same numbers; a run that changes only stage 2 takes stage 1 from the cache
    and trains stage 2 (its second rank, launched at that fit, inherits rank 0's decisions); a one-device run of the
    same config does not take the DDP result (its own entry: close numbers, not equal ones)."""
    cache = tmp_path / "cache"
    runs = {"first": ["trainer=ddp_cpu"], "again": ["trainer=ddp_cpu"],
            "stage2": ["trainer=ddp_cpu", "diffusion.optimizer.lr=5e-4"], "one": []}
    m = {}
    for name, args in runs.items():
        proc = train(args, tmp_path / name, cache)
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
        m[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        assert m[name]["status"] == "ok", name
    source = {n: (r["stage1/source"], r["stage2/source"]) for n, r in m.items()}
    assert source == {"first": ("trained", "trained"), "again": ("cache", "cache"), "stage2": ("cache", "trained"),
                      "one": ("trained", "trained")}
    for key in ("recon/psnr", "gen/fid", "stage1/steps", "stage2/steps", "stage1/devices", "stage2/devices"):
        assert m["again"][key] == m["first"][key], key
    assert m["stage2"]["stage2/devices"] == 2 and m["one"]["stage1/devices"] == 1
    assert len(list((cache / "stage1").glob("*/manifest.json"))) == 2  # the DDP entry and the one-device one
    assert not list((tmp_path / "first" / "checkpoints").rglob(".*.ckpt"))  # the published copy is cleaned up


@pytest.mark.parametrize("row", ["ae", "identity", "vae_gan", "bigan", "ali", "gan_inversion", "ddgan"])
def test_every_row_family_trains_under_ddp_cpu(row, tmp_path):
    """trainer=ddp_cpu (2 gloo processes) for each row family besides the VAE (above): the GAN-family rows and
    DDGAN step several optimizers themselves, so each backward reaches only some parameters (DDP's
    unused-parameter handling, set for them by ldm.run.stages). Stage 1 only for the autoencoder rows; the
    identity row (nothing to train in stage 1: pixel diffusion) and DDGAN train stage 2. The batch is global:
    each device takes half, and the recorded devices say so."""
    run = tmp_path / row
    args = {"ddgan": ["diffusion=ddgan"], "identity": ["autoencoder=identity"]}.get(
        row, [f"autoencoder={row}", "stage=stage1"])
    proc = train(["trainer=ddp_cpu", *args], run, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "ok"
    stages = {"ddgan": ["stage1", "stage2"], "identity": ["stage2"]}.get(row, ["stage1"])
    for stage in stages:
        assert m[f"{stage}/steps"] == 4 and m[f"{stage}/devices"] == 2, stage
    if "stage2" in stages:
        assert m["gen/fid"] > 0


@pytest.mark.parametrize("data, expected", [
    ("textures", {"eval/fid_floor_n": 2000, "eval/reference_n": 10000}),
    ("stacked_digits", {"eval/fid_floor_n": 10000, "eval/num_samples": 10000, "eval/num_modes": 1000}),
])
def test_the_decidable_datasets_run_end_to_end(data, expected, tmp_path):
    """data=textures and data=stacked_digits through the real command line: metrics and figures, with their
    latent presets (textures 4x8x8, stacked digits 6x4x4) and, for stacked digits, the mode metrics."""
    run = tmp_path / "run"
    proc = train([f"data={data}"], run, tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "ok" and {k: m[k] for k in expected} == expected
    assert m["stage1/latent_shape"] == {"textures": "4x8x8", "stacked_digits": "6x4x4"}[data]
    assert 0 < m["recon/chroma_ratio"] and m["eval/evaluator_acc"] > 0 and m["gen/fid"] > 0
    if data == "stacked_digits":
        assert 1 <= m["gen/modes_covered"] <= 1000 and m["gen/mode_kl"] >= 0 and m["eval/real_modes_covered"] >= 1
        assert 0 < m["eval/evaluator_channel_acc"] <= 1
    for figure in ("recon.png", "samples.png", "class_hist.png", "interpolation.png"):
        assert (run / figure).is_file(), figure


def test_hf_dataset_from_disk_runs_and_a_missing_column_is_one_error_line(tmp_path):
    datasets = pytest.importorskip("datasets")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = {"img": [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(60)],
            "label": [i % 3 for i in range(60)]}
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    hf = ["data=hf", f"data.path={tmp_path / 'ds'}", "data.image_size=16"]
    bad = train(hf, tmp_path / "bad", tmp_path / "cache")
    assert bad.returncode == 2, bad.stderr[-2000:]
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: data.image_column=image is not a column of data.path={tmp_path / 'ds'} (columns: img, "
                      f"label): set data.image_column to one of them"], bad.stderr[-2000:]
    good = train(hf + ["data.image_column=img"], tmp_path / "good", tmp_path / "cache")
    assert good.returncode == 0, good.stderr[-3000:]
    m = json.loads((tmp_path / "good" / "metrics.json").read_text())
    assert m["status"] == "ok" and m["stage1/latent_shape"] == "4x4x4" and "gen/classes_covered" in m
