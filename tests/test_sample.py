"""sample.py and exports: exactly N files, the same bytes for the same seed, an export samples like its run,
chosen classes come out as those classes, and bad input gets one error line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ldm import cli
from ldm.errors import ConfigError
from ldm.run.loading import load
from tests.conftest import ROOT, compose_cfg


@pytest.fixture(scope="module")
def run(fast_run) -> Path:
    return fast_run


def sample(run_dir: Path, out: Path, *overrides: str) -> dict:
    cfg = compose_cfg([f"run_dir={run_dir}", f"out_dir={out}", *overrides], config_name="sample",
                      output_dir=out.parent / "logs")
    return cli.sample(cfg)


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_exactly_n_pngs_and_the_same_bytes_for_the_same_seed(run, tmp_path):
    sample(run, tmp_path / "a", "num_samples=7", "batch_size=3", "seed=5")
    sample(run, tmp_path / "b", "num_samples=7", "batch_size=3", "seed=5")
    sample(run, tmp_path / "c", "num_samples=7", "batch_size=3", "seed=6")
    pngs = sorted(p.name for p in (tmp_path / "a").glob("*.png") if p.name != "grid.png")
    assert pngs == [f"{i:06d}.png" for i in range(7)]
    for name in [*pngs, "samples.npz", "grid.png"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "samples.npz").read_bytes() != (tmp_path / "c" / "samples.npz").read_bytes()
    npz = np.load(tmp_path / "a" / "samples.npz")
    assert npz["images"].shape == (7, 16, 16, 1) and npz["images"].dtype == np.uint8
    assert (npz["labels"] == -1).all()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow  # export + load + sample (2 s)
def test_an_export_loads_alone_and_samples_like_its_run(run, tmp_path):
    cfg = compose_cfg([f"run_dir={run}", f"export={tmp_path / 'export'}"], config_name="evaluate",
                      output_dir=tmp_path / "logs")
    cli.evaluate(cfg)
    exported = tmp_path / "export"
    assert sorted(p.name for p in exported.iterdir()) == ["autoencoder.safetensors", "diffusion.safetensors",
                                                          "model.json"]
    model = load(exported)
    assert model.class_names == [str(i) for i in range(10)] and model.config.seed == 1
    original = load(run)
    for a, b in ((model.autoencoder, original.autoencoder), (model.diffusion, original.diffusion)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    sample(run, tmp_path / "from_run", "num_samples=5")
    sample(exported, tmp_path / "from_export", "num_samples=5")
    for name in ("000000.png", "000004.png", "samples.npz"):
        assert (tmp_path / "from_run" / name).read_bytes() == (tmp_path / "from_export" / name).read_bytes()


@pytest.mark.parametrize("overrides, message", [
    (["class=3"], "class=3: this run is not class-conditional"),
    (["num_samples=0"], "num_samples=0 must be an integer >= 1"),
    (["steps=5000"], "sampler.steps=5000 must be an integer in [1, 1000]"),
])
def test_bad_input_is_one_error_line(run, tmp_path, capsys, overrides, message):
    with pytest.raises(SystemExit) as e:
        sample(run, tmp_path / "out", *overrides)
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_an_existing_out_dir_is_kept_unless_overwrite(run, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit):
        sample(run, tmp_path / "out", "num_samples=2")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep"
    sample(run, tmp_path / "out", "num_samples=2", "overwrite=true")
    assert not (tmp_path / "out" / "mine.txt").exists() and (tmp_path / "out" / "000001.png").is_file()


@pytest.mark.slow
def test_a_chosen_class_comes_out_as_that_class(tmp_path):
    """A class-conditional run; `class=3` with guidance: the evaluator calls most samples 3 (chance: 1 in 10)."""
    from ldm.data.digits import DigitsDataModule
    from ldm.metrics.evaluator import load_or_train

    run = tmp_path / "cond"
    overrides = ["logger=none", "diffusion.class_conditional=true", "stage1.max_steps=300", "stage2.max_steps=800",
                 "stage2.val_every=400", "threads=1", "metrics.num_samples=50"]
    proc = subprocess.run([sys.executable, "train.py", *overrides, f"hydra.run.dir={run}",
                           f"paths.cache_dir={tmp_path / 'cache'}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "sample.py", f"run_dir={run}", "class=3", "guidance_scale=3",
                           "num_samples=64", f"out_dir={tmp_path / 'threes'}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    images = torch.from_numpy(np.load(tmp_path / "threes" / "samples.npz")["images"]).permute(0, 3, 1, 2)
    images = images.float() / 127.5 - 1
    data = DigitsDataModule(image_size=16)
    data.setup()
    metrics = json.loads((run / "metrics.json").read_text())
    recipe = {"steps": 600, "batch_size": 64, "lr": 2e-3, "width": 16, "feature_dim": 64, "seed": 0}
    evaluator = load_or_train(data, {"digits": 16}, recipe, tmp_path / "cache")
    share = evaluator.accuracy_on(images, torch.full((len(images),), 3))
    assert metrics["status"] == "ok" and share > 0.5, share


@pytest.mark.slow  # trains its own class-conditional run: over 5 s here
def test_model_sample_takes_the_usual_knobs_for_one_call(tmp_path):
    """Model.sample(n, seed, label=index or name, sampler=, steps=, guidance_scale=): each knob changes the images,
    the same arguments give the same images, a name equals its index, class names survive load and export, and
    the run's own sampler is what it was after the call."""
    from ldm.run import train
    from ldm.run.export import export

    out = tmp_path / "cond"
    train.main(compose_cfg(["debug=fast", "logger=none", "metrics.features=null", "diffusion.class_conditional=true"],
                           output_dir=out))
    model = load(out)
    assert model.names() == [str(i) for i in range(10)]
    own = model.diffusion.sampler
    base = model.sample(4, seed=1, label=3)
    assert torch.equal(base, model.sample(4, seed=1, label="3"))
    # ddpm at 4 steps: its own 1000 would be most of the test
    for knob in ({"steps": 2}, {"sampler": "ddpm", "steps": 4}, {"guidance_scale": 3.0}, {"label": 4}):
        assert not torch.equal(base, model.sample(4, seed=1, **{"label": 3, **knob})), knob
    assert model.diffusion.sampler is own and torch.equal(base, model.sample(4, seed=1, label=3))
    with pytest.raises(ConfigError, match="sampler=nope: choose one of"):
        model.sample(2, sampler="nope")
    with pytest.raises(ConfigError, match="class=seven is not one of the run's 10 classes"):
        model.sample(2, label="seven")
    export(model, tmp_path / "export", source=str(out))
    assert load(tmp_path / "export").class_names == [str(i) for i in range(10)]
