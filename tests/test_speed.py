"""Speed modes change speed, not results: bf16 and torch.compile give finite results of the same shapes, and
the noise stream does not depend on a tensor's memory format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ldm.nets.unet import UNet
from ldm.utils.seeds import normal_like

TINY = dict(model_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[2], num_heads=2,
            dropout=0.0)


def test_noise_does_not_depend_on_memory_format():
    x = torch.zeros(4, 3, 5, 5)
    draws = []
    for like in (x, x.to(memory_format=torch.channels_last)):
        torch.manual_seed(0)
        draws.append(normal_like(like))
    torch.manual_seed(0)
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], torch.randn_like(x))
    assert draws[1].is_contiguous()


def test_bf16_autocast_unet_is_finite_and_close():
    torch.manual_seed(0)
    net = UNet(2, **TINY).eval()
    for p in net.parameters():  # the zero-initialised output layers would make any two outputs equal
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(8, 2, 4, 4), torch.randint(0, 1000, (8,))
    with torch.no_grad():
        full = net(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = net(x, t)
    assert half.shape == full.shape and torch.isfinite(half).all()
    assert (half.float() - full).abs().max() < 0.05 * full.abs().max()  # bf16 has 8 bits of mantissa


@pytest.mark.slow
def test_compiled_unet_matches_eager():
    torch.manual_seed(0)
    net = UNet(2, **TINY)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(8, 2, 4, 4), torch.randint(0, 1000, (8,))
    eager = net(x, t)
    eager.square().mean().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.compile()
    compiled = net(x, t)
    compiled.square().mean().backward()
    assert torch.allclose(compiled, eager, atol=1e-5, rtol=1e-4)
    assert all(torch.allclose(p.grad, g, atol=1e-5, rtol=1e-4) for p, g in zip(net.parameters(), grads))


@pytest.mark.slow
def test_bf16_mixed_run_is_finite(make_cfg):
    from ldm import pipeline

    cfg = make_cfg(["debug=fast", "logger=none", "metrics.features=null", "trainer.precision=bf16-mixed"])
    pipeline.main(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    for key in ("stage1/val_loss", "stage2/val_loss", "recon/psnr", "recon/mse"):
        assert math.isfinite(metrics[key]), key
    fp32 = make_cfg(["debug=fast", "logger=none", "metrics.features=null"])
    assert pipeline.cache.key(pipeline.stage1_parts(fp32)) != metrics["stage1/key"]  # never served to fp32 runs
