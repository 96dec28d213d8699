"""The error contract: every user-fixable problem is one `error:` line naming the key, `status: failed`, exit 2,
and whatever the config alone can tell is refused before the first training step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.run import train
from tests.conftest import compose_cfg

QUICK = ["debug=fast", "logger=none", "metrics.features=null"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """stage-1 checkpoints of other rows / shapes than the default config (vae, f=4)."""
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for name, extra in {"bigan": ["autoencoder=bigan"], "vae_f2": ["backbone.f=2"]}.items():
        cfg = compose_cfg(QUICK + ["stage=stage1"] + extra, output_dir=root / name)
        train.train(cfg)
        out[name] = root / name / "checkpoints/stage1/last.ckpt"
    return out


def image_folder(root: Path, classes: list[str], n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        folder = root / c if c else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def refused(make_cfg, overrides: list[str], capsys) -> tuple[str, dict]:
    """Run in-process; assert exit 2, one error line, no training step; return the line and metrics.json."""
    cfg = make_cfg(overrides)
    with pytest.raises(SystemExit) as e:
        train.main(cfg)
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    run = Path(cfg.paths.output_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"] == lines[0][len("error: "):]
    assert "stage1/steps" not in metrics and not (run / "checkpoints").exists()  # nothing trained
    return lines[0], metrics


@pytest.mark.parametrize("override, message", [
    ("backbone.f=3", "error: backbone.f=3 must be a power of two (1, 2, 4, 8, ...)"),
    ("data.channels=2", "error: data.channels=2 must be 1 (grayscale) or 3 (RGB)"),
    ("stage1.max_steps=0", "error: stage1.max_steps=0 must be an integer >= 1"),
    ("float32_matmul_precision=fast", "error: float32_matmul_precision=fast: choose one of highest, high, medium"),
    ("sampler_noise=gpu", "error: sampler_noise='gpu' must be one of cpu, device"),
    ("trainer=ddp_cpu data.batch_size=15", "error: data.batch_size=15 does not split over trainer.devices=2: under "
                                           "DDP it is the global batch (each device takes data.batch_size / "
                                           "devices, so budgets match one device); use a multiple of 2"),
    ("stage2.max_steps=-3", "error: stage2.max_steps=-3 must be an integer >= 1"),
    ("stage1.val_every=0", "error: stage1.val_every=0 must be an integer >= 1"),
    ("stage2.batch_size=5000", "error: stage2.batch_size=5000 is larger than the training split (1437 latents): "
                               "lower stage2.batch_size"),
    ("data.batch_size=2000", "error: data.batch_size=2000 is larger than the training split (1437 images): "
                             "lower data.batch_size"),
    ("stage=both", "error: stage=both: choose one of all, stage1, stage2"),
    ("diffusion.net.channel_mult=[1,2,2,2]", "error: UNet with 4 levels needs a latent size divisible by 8, got 4: "
                                              "use fewer channel_mult entries"),
])
def test_bad_config_values(override, message, make_cfg, capsys):
    line, _ = refused(make_cfg, QUICK + override.split(), capsys)
    assert line == message


def test_a_truncated_checkpoint_names_the_file(make_cfg, capsys, tmp_path):
    import torch

    path = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "hyper_parameters": {}}, path)
    path.write_bytes(path.read_bytes()[:1000])
    line, _ = refused(make_cfg, QUICK + [f"autoencoder.ckpt_path={path}"], capsys)
    assert line.startswith(f"error: autoencoder.ckpt_path={path} cannot be read (")
    assert "truncated, corrupt or not a checkpoint" in line


@pytest.mark.slow
@pytest.mark.parametrize("key", ["autoencoder.ckpt_path", "ckpt_path"])
def test_a_checkpoint_of_another_row(key, checkpoints, make_cfg, capsys):
    path = checkpoints["bigan"]
    line, _ = refused(make_cfg, QUICK + [f"{key}={path}"], capsys)
    assert line.startswith(f"error: {key}={path} holds a BiGAN, but the config asks for a VAE")


@pytest.mark.slow
@pytest.mark.parametrize("key", ["autoencoder.ckpt_path", "ckpt_path"])
def test_a_checkpoint_of_another_latent_shape_shows_both(key, checkpoints, make_cfg, capsys):
    path = checkpoints["vae_f2"]
    line, _ = refused(make_cfg, QUICK + [f"{key}={path}"], capsys)
    assert line.startswith(f"error: {key}={path} holds a VAE, latent 2x8x8, 1x16x16 images, but the config asks "
                           f"for a VAE, latent 2x4x4, 1x16x16 images")


@pytest.mark.slow
def test_a_stage2_checkpoint_of_another_latent_shape(checkpoints, make_cfg, capsys, tmp_path):
    other = make_cfg(QUICK + ["backbone.f=2"], name="f2")
    train.train(other)
    capsys.readouterr()  # that run's progress bars are not the refused run's output
    path = Path(other.paths.output_dir) / "checkpoints/stage2/last.ckpt"
    line, _ = refused(make_cfg, QUICK + [f"stage2.ckpt_path={path}"], capsys)
    assert line.startswith(f"error: stage2.ckpt_path={path} holds a LatentDiffusion, latent 2x8x8, but the config "
                           f"asks for a LatentDiffusion, latent 2x4x4")


def test_a_row_without_encoder_is_refused_before_stage1(make_cfg, capsys):
    line, _ = refused(make_cfg, QUICK + ["autoencoder=gan"], capsys)
    assert "autoencoder=bigan" in line and "stage=stage1" in line


def test_evaluator_features_on_unlabelled_data(make_cfg, capsys, tmp_path):
    root = image_folder(tmp_path / "flat", [""])
    line, _ = refused(make_cfg, ["debug=fast", "logger=none", "data=folder", f"data.root={root}",
                                 "data.image_size=8", "backbone.f=2", "diffusion.net.channel_mult=[1]",
                                 "data.batch_size=4", "stage2.batch_size=4"], capsys)
    assert line.startswith("error: metrics/features=evaluator needs labelled data with at least 2 classes, but the "
                           "data has 0")


def test_evaluator_features_on_a_single_class(make_cfg, capsys, tmp_path):
    root = image_folder(tmp_path / "one", ["cats"])
    line, _ = refused(make_cfg, ["debug=fast", "logger=none", "data=folder", f"data.root={root}",
                                 "data.image_size=8", "backbone.f=2", "diffusion.net.channel_mult=[1]",
                                 "data.batch_size=4", "stage2.batch_size=4"], capsys)
    assert "needs labelled data with at least 2 classes, but the data has 1" in line


def test_a_test_split_too_small_to_measure(make_cfg, capsys):
    line, _ = refused(make_cfg, ["debug=fast", "logger=none", "data.test_fraction=0.001"], capsys)
    assert line == ("error: the test split has 2 images, too few for FID and the real-data floor: raise "
                    "data.test_fraction, or set metrics.features=null")


@pytest.mark.slow
def test_prdc_k_is_clamped_below_a_small_test_split_and_recorded(make_cfg):
    """4 test images and prdc_k=5: the prdc package needs k <= n - 2; k=2 is used and recorded."""
    m = train.train(make_cfg(["debug=fast", "logger=none", "data.test_fraction=0.002"]))
    assert m["eval/num_samples"] == 4 and m["eval/prdc_k"] == 2
    assert 0 <= m["gen/precision"] <= 1 and 0 <= m["gen/recall"] <= 1


def test_inception_features_compose_with_debug_fast_and_are_checked_before_training(make_cfg, capsys, tmp_path,
                                                                                   monkeypatch):
    """metrics/features=inception with debug=fast built (debug=fast's evaluator recipe no longer breaks it), and
    its dependencies are checked before stage 1: without torch-fidelity, then without the weights (nothing is
    downloaded at run time), each is one error line; with both, the check passes and names the file it loads."""
    import sys
    import types

    from ldm.metrics.inception import WEIGHTS, InceptionFeatures, weights_file

    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # not importable, whatever this machine has
    overrides = ["debug=fast", "logger=none", "metrics/features=inception"]
    line, metrics = refused(make_cfg, overrides, capsys)
    assert line.startswith("error: metrics/features=inception needs torch-fidelity, which is not installed")
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    hub = tmp_path / "hub"
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(hub))
    line, _ = refused(make_cfg, overrides, capsys)
    assert f"its weights are not in torch hub's cache ({hub / 'checkpoints' / WEIGHTS})" in line
    assert "nothing is downloaded at run time" in line and "metrics.features.weights_path=" in line
    line, _ = refused(make_cfg, [*overrides, f"metrics.features.weights_path={tmp_path / 'none.pth'}"], capsys)
    assert f"metrics.features.weights_path={tmp_path / 'none.pth'} is not a file" in line
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / WEIGHTS).write_bytes(b"weights")
    assert weights_file() == hub / "checkpoints" / WEIGHTS
    assert weights_file(str(tmp_path / "hub" / "checkpoints" / WEIGHTS)) == hub / "checkpoints" / WEIGHTS
    with pytest.raises(Exception, match="metrics.features.width_mult is not a setting of metrics/features=inception"):
        InceptionFeatures(width_mult=2)


def test_deterministic_training_sets_cublas_workspace_and_keeps_a_users(monkeypatch):
    """trainer.deterministic=true needs cuBLAS's fixed workspace in the environment before the first CUDA matrix
    product (else torch raises there); a value the user exported is kept; false leaves the environment alone."""
    from ldm.run.preflight import CUBLAS_WORKSPACE, deterministic_cublas

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert deterministic_cublas(False) is None and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert deterministic_cublas(True) == CUBLAS_WORKSPACE == os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert deterministic_cublas("warn") == ":16:8"
