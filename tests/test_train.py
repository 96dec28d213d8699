"""train.py end to end (in-process), the run-directory contract, resume, and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ldm.errors import Diverged
from ldm.run import train
from tests.conftest import ROOT, resume_vs_straight

FAST = ["debug=fast", "logger=csv"]
# for tests about training itself: no evaluator, no stage cache (each run really trains)
QUICK = FAST + ["logger=none", "metrics.features=null", "cache.stage1=false", "cache.stage2=false"]


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.slow  # a full debug run (6 s); the CLI runs of the slow tier write the same directory
def test_debug_fast_writes_run_directory(make_cfg):
    cfg = make_cfg(FAST)
    out = Path(cfg.paths.output_dir)
    # train.py returns the optimized metric (gen/fid by default) for sweepers
    assert cfg.optimized_metric == "gen/fid"
    assert train.main(cfg) == pytest.approx(json.loads((out / "metrics.json").read_text())["gen/fid"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert metrics["stage1/steps"] == cfg.stage1.max_steps
    assert metrics["stage1/params"] > 0 and metrics["stage1/wall_s"] > 0 and metrics["stage1/reused"] is False
    ckpts = out / "checkpoints" / "stage1"
    # the reconstruction numbers are those of the saved autoencoder on the test split (a known answer)
    from ldm.utils.checkpoint import load_module
    from ldm.utils.config import build

    data = build(cfg.data)
    data.setup()
    x = data.split("test").images
    with torch.no_grad():
        x_hat = load_module(ckpts / "last.ckpt", "checkpoint").eval().reconstruct(x).clamp(-1, 1)
    mse = (x_hat - x).pow(2).flatten(1).mean(1)
    assert metrics["recon/mse"] == pytest.approx(mse.mean().item(), rel=1e-5)
    assert metrics["recon/psnr"] == pytest.approx((10 * torch.log10(4 / mse)).mean().item(), rel=1e-5)
    assert 0 < metrics["recon/ssim"] < 1  # 4 training steps: far from a perfect reconstruction
    assert (ckpts / "last.ckpt").is_file() and list(ckpts.glob("best-*.ckpt"))
    assert load_state(ckpts / "last.ckpt")["global_step"] == cfg.stage1.max_steps
    for png in ("stage1_recon.png", "stage1_prior.png", "stage2_samples.png", "stage2_denoising.png", "samples.png"):
        assert (out / png).stat().st_size > 100, png
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temp files behind
    tree = (out / "config_tree.log").read_text()  # the composed config, printed and saved at the start
    assert tree.startswith("CONFIG") and "ldm.autoencoders.vae.VAE" in tree and "kl_weight: 1.0e-06" in tree
    assert tree.index("data") < tree.index("autoencoder") < tree.index("trainer") and "hydra" not in tree
    # stage 2 and the generation timing
    assert metrics["stage2/steps"] == cfg.stage2.max_steps and metrics["stage2/params"] > 0
    assert metrics["stage2/scale_factor"] > 0 and metrics["stage2/val_loss"] > 0
    assert metrics["gen/nfe"] == cfg.sampler.steps and metrics["gen/sec_per_sample"] > 0
    assert load_state(out / "checkpoints/stage2/last.ckpt")["global_step"] == cfg.stage2.max_steps
    contract = ["stage1/steps", "stage1/wall_s", "stage1/params", "stage1/reused", "stage1/val_loss",
                "stage2/steps", "stage2/wall_s", "stage2/params", "stage2/val_loss", "stage2/scale_factor",
                "recon/mse", "recon/psnr", "recon/ssim", "recon/rfid", "latent/kl_to_prior", "latent/std",
                "latent/interp_ppl", "latent/interp_uniformity", "latent/cycle_error", "latent/prior_fid",
                "gen/fid", "gen/kid", "gen/kid_std", "gen/precision", "gen/recall", "gen/density", "gen/coverage",
                "gen/classes_covered", "gen/class_kl", "gen/confidence", "gen/nfe", "gen/sec_per_sample",
                "eval/evaluator_acc", "eval/num_samples", "eval/fid_floor"]
    assert not [k for k in contract if metrics.get(k) is None]
    for name in ("recon.png", "interpolation.png", "latent_hist.png", "class_hist.png"):
        assert (out / name).stat().st_size > 500, name
    cache = torch.load(out / "latents.pt", weights_only=True)
    sizes = {"train": 1437, "val": 180, "test": 180}
    for split, n in sizes.items():
        assert cache[split]["mean"].shape == (n, 2, 4, 4) and cache[split]["std"].shape == (n, 2, 4, 4)
        assert cache[split]["labels"].shape == (n,) and (cache[split]["std"] > 0).all()


@pytest.mark.slow
def test_stage1_only_and_reuse_skips_training(make_cfg):
    first = make_cfg(QUICK + ["stage=stage1"], name="first")
    m1 = train.train(first)
    assert "stage2/steps" not in m1 and not (Path(first.paths.output_dir) / "latents.pt").exists()
    ckpt = Path(first.paths.output_dir) / "checkpoints/stage1/last.ckpt"
    second = make_cfg(QUICK + [f"autoencoder.ckpt_path={ckpt}"], name="second")
    m2 = train.train(second)
    assert m2["stage1/reused"] is True and m2["stage1/steps"] == first.stage1.max_steps
    owned = Path(second.paths.output_dir) / "checkpoints/stage1"  # nothing trained: the given checkpoint, linked
    assert [p.name for p in owned.iterdir()] == ["last.ckpt"]
    assert (owned / "last.ckpt").read_bytes() == ckpt.read_bytes()
    assert m2["recon/mse"] == pytest.approx(m1["recon/mse"], rel=1e-6)  # the very same weights
    assert m2["stage2/steps"] == second.stage2.max_steps


def test_stage2_alone_needs_an_autoencoder(make_cfg, capsys):
    cfg = make_cfg(FAST + ["stage=stage2"])
    with pytest.raises(SystemExit):
        train.main(cfg)
    assert "autoencoder.ckpt_path" in capsys.readouterr().err


@pytest.mark.slow
def test_identity_is_pixel_space_diffusion(make_cfg):
    cfg = make_cfg(QUICK + ["autoencoder=identity"])
    m = train.train(cfg)
    assert m["stage1/steps"] == 0 and m["stage1/params"] == 0 and m["recon/mse"] == 0
    assert m["stage1/latent_shape"] == "1x16x16" and m["stage2/steps"] == cfg.stage2.max_steps
    cache = torch.load(Path(cfg.paths.output_dir) / "latents.pt", weights_only=True)
    assert cache["train"]["std"] is None and cache["train"]["mean"].shape == (1437, 1, 16, 16)


@pytest.mark.slow
def test_stage2_resume_equals_uninterrupted(make_cfg):
    common = QUICK + ["autoencoder=identity", "stage2.val_every=3"]
    straight, _, resumed, metrics = resume_vs_straight(make_cfg, common, "stage2", 6, 3, "stage2.ckpt_path")
    assert metrics["stage2/steps"] == 6
    a, b = straight["state_dict"], resumed["state_dict"]
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_ddgan_stage2_runs_samples_in_its_steps_and_resumes_exactly(make_cfg):
    """diffusion=ddgan on the VAE's latents: 4 network evaluations per sample, and a run stopped at step 3 and
    resumed to 6 ends with the same weights (generator, EMA, discriminator) as one run straight to 6."""
    common = QUICK + ["diffusion=ddgan", "stage2.val_every=3", "diffusion.lazy_reg=2"]
    straight, _, resumed, metrics = resume_vs_straight(make_cfg, common, "stage2", 6, 3, "stage2.ckpt_path")
    assert metrics["stage2/steps"] == 6 and metrics["gen/nfe"] == 4
    a, b = straight["state_dict"], resumed["state_dict"]
    assert any(k.startswith("discriminator.") for k in a) and any(k.startswith("ema.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_resume_equals_uninterrupted(make_cfg):
    """4 steps + resume to 8 == 8 steps straight (weights bit-identical, step continues from 4)."""
    common = QUICK + ["stage1.val_every=4", "stage=stage1"]
    a, h, b, metrics = resume_vs_straight(make_cfg, common, "stage1", 8, 4, "ckpt_path")
    assert h["global_step"] == 4
    assert metrics["stage1/steps"] == 8
    assert a["global_step"] == b["global_step"] == 8
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    # and the half-way weights really differ (the comparison above is not vacuous)
    assert any(not torch.equal(h["state_dict"][k], v) for k, v in a["state_dict"].items())


@pytest.mark.slow
def test_same_seed_same_result_other_seed_differs(make_cfg):
    runs = [train.train(make_cfg(QUICK + [f"seed={s}"])) for s in (0, 0, 1)]
    assert runs[0]["recon/mse"] == runs[1]["recon/mse"] and runs[0]["stage2/val_loss"] == runs[1]["stage2/val_loss"]
    assert runs[0]["recon/mse"] != runs[2]["recon/mse"]


def test_missing_resume_checkpoint_is_a_user_error(make_cfg, capsys):
    cfg = make_cfg(FAST + ["ckpt_path=/nonexistent/last.ckpt"])
    with pytest.raises(SystemExit) as e:
        train.main(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: ckpt_path=/nonexistent/last.ckpt is not a file: pass a checkpoint such as "
                   "<run>/checkpoints/stage1/last.ckpt"]
    status = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert status["status"] == "failed" and "ckpt_path" in status["error"]


def test_divergence_is_recorded(make_cfg, monkeypatch):
    from ldm.autoencoders.vae import VAE

    def nan_losses(self, x, sample=True):
        raise Diverged("stage 1 loss became nan at step 0")

    monkeypatch.setattr(VAE, "losses", nan_losses)
    cfg = make_cfg(QUICK)
    assert train.main(cfg) is None
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics == {"status": "diverged", "error": "stage 1 loss became nan at step 0"}


@pytest.mark.slow
def test_cli_bad_data_root_one_line_nonzero(tmp_path):
    """The real command line: one clear line on stderr, exit code 2, failed status recorded."""
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "train.py", "data=folder", f"data.root={tmp_path}/missing",
                           f"hydra.run.dir={run_dir}", "logger=none"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"error: data.root={tmp_path}/missing does not exist: point data.root at a folder of PNG/JPEG images"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"
