"""Extending ldm takes one module and one YAML each: a row, a sampler and a dataset, written here to a temporary
package and config folder (on Hydra's search path), then trained and evaluated end to end by the real pipeline."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from ldm.run import train
from tests.conftest import compose_cfg

MODULE = '''
"""A toy row, a toy sampler and a toy dataset."""
import torch
from torch import nn

from ldm.autoencoders.base import Autoencoder
from ldm.data.base import InMemoryImageDataModule


class PoolAE(Autoencoder):
    """encode: average-pool by f, a learnt 1x1 conv; decode: a learnt 1x1 conv, upsample."""

    def __init__(self, *, image_size, in_channels, num_vis, f, optimizer):
        super().__init__(image_size=image_size, in_channels=in_channels, num_vis=num_vis, optimizer=optimizer)
        self.save_hyperparameters()
        self.f, self.enc, self.dec = f, nn.Conv2d(in_channels, 2, 1), nn.Conv2d(2, in_channels, 1)

    @property
    def latent_shape(self):
        return (2, self.image_size // self.f, self.image_size // self.f)

    def encode_distribution(self, x):
        return self.enc(nn.functional.avg_pool2d(x, self.f)), None

    def decode(self, z):
        return nn.functional.interpolate(self.dec(z), scale_factor=self.f)

    def losses(self, x, sample=True):
        x_hat = self.reconstruct(x)
        rec = (x_hat - x).abs().flatten(1).sum(1).mean()
        return {"loss": rec, "rec": rec, "x_hat": x_hat}


@torch.no_grad()
def sample_x0(denoiser, process, x, *, steps, spacing, generator=None, callback=None):
    """One jump to the x0 prediction from each visited timestep (a deliberately crude sampler)."""
    for i, t in enumerate(spacing(process.num_timesteps, steps)):
        tt = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        x0, eps = process.to_x0_eps(denoiser(x, tt), x, tt)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "denoised": x0})
        x = x0 if i + 1 == steps else process.q_sample(x0, tt * 0 + max(t - 1, 0), eps)
    return x


class Stripes(InMemoryImageDataModule):
    """Two classes of 16x16 images: horizontal and vertical stripes of random phase."""

    def load(self):
        g = torch.Generator().manual_seed(0)
        n, s = 400, self.image_size
        phase = torch.randint(0, 4, (n,), generator=g)
        wave = torch.stack([torch.cos((torch.arange(s) + p) * 3.1416 / 2) for p in phase.tolist()])
        labels = torch.arange(n) % 2
        images = torch.where(labels.view(n, 1, 1) == 0, wave[:, :, None].expand(n, s, s),
                             wave[:, None, :].expand(n, s, s))
        return images.unsqueeze(1).repeat(1, self.channels, 1, 1).clamp(-1, 1), labels
'''

YAMLS = {
    "autoencoder/pool.yaml": """
        # A toy row: one module (toy_ext.PoolAE) + this file, built on the shared block.
        defaults:
          - /_shared/autoencoder/base@_here_
          - _self_

        _target_: toy_ext.PoolAE
        f: 4
        optimizer:
          _target_: torch.optim.Adam
          _partial_: true
          lr: 1.0e-2
        """,
    "sampler/x0.yaml": """
        # A toy sampler: one function (toy_ext.sample_x0) + this file; it takes the shared spacing group.
        defaults:
          - spacing: even
          - _self_

        _target_: toy_ext.sample_x0
        _partial_: true
        steps: 7
        """,
    "data/stripes.yaml": """
        # A toy dataset: one InMemoryImageDataModule subclass (toy_ext.Stripes) + this file.
        _target_: toy_ext.Stripes
        image_size: 16
        channels: 1
        batch_size: 16
        val_fraction: 0.1
        test_fraction: 0.1
        split_seed: 0
        shuffle_seed: ${seed}
        num_workers: 0
        """,
}


@pytest.fixture
def extension(tmp_path, monkeypatch):
    """toy_ext.py importable, its YAMLs on Hydra's search path, its module on the target allowlist."""
    (tmp_path / "toy_ext.py").write_text(MODULE)
    for name, text in YAMLS.items():
        path = tmp_path / "conf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LDM_EXTRA_TARGETS", "toy_ext")
    yield tmp_path
    sys.modules.pop("toy_ext", None)


@pytest.mark.slow  # composes and trains a toy row, sampler and dataset (~4 s): the slow tier
def test_a_row_a_sampler_and_a_dataset_each_take_one_module_and_one_yaml(extension):
    lines = {name: len(textwrap.dedent(text).strip().splitlines()) for name, text in YAMLS.items()}
    assert max(lines.values()) <= 12  # each YAML is a handful of lines
    out = extension / "run"
    cfg = compose_cfg(["debug=fast", "logger=none", "autoencoder=pool", "sampler=x0", "data=stripes",
                       f"hydra.searchpath=[file://{extension / 'conf'}]"], output_dir=out)
    train.main(cfg)
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "ok", m
    assert m["stage1/kind"] == "PoolAE" and m["stage1/latent_shape"] == "2x4x4"
    assert cfg.sampler._target_ == "toy_ext.sample_x0" and m["gen/nfe"] == cfg.sampler.steps  # (debug=fast: 5)
    assert m["eval/num_samples"] == 40  # the toy data's test split
    assert (out / "stage2_denoising.png").is_file()  # drawn through the toy sampler's callback
    assert m["eval/evaluator_acc"] > 0.9  # two kinds of stripes: the evaluator tells them apart
