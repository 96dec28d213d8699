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


@pytest.mark.parametrize("target,extra", [("torch.optim.AdamW", {"weight_decay": 0.01}),
                                          ("torch.optim.Adam", {"betas": [0.5, 0.9]})])
@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_multi_tensor_optimizer_and_ema_are_bit_identical(target, extra):
    """build_optimizer picks the foreach implementation (CPU default: per-parameter) and EMA updates with one
    multi-tensor lerp: both must give exactly the weights the per-parameter loops give, not nearly."""
    from ldm.diffusion.ema import EMA
    from ldm.utils.config import build_optimizer

    cfg = {"_target_": target, "_partial_": True, "lr": 1e-2, **extra}
    weights = []
    for foreach in (None, False):  # None: the config does not choose, build_optimizer does
        torch.manual_seed(0)
        net = UNet(2, **TINY)
        init = torch.cat([p.detach().flatten() for p in net.parameters()])
        opt = build_optimizer(cfg if foreach is None else {**cfg, "foreach": foreach}, net.parameters())
        assert opt.defaults["foreach"] is (True if foreach is None else False)
        ema = EMA(net, 0.9)
        loop = [p.detach().clone() for p in ema.net.parameters()]
        for step in range(3):
            x, t = torch.randn(4, 2, 4, 4), torch.randint(0, 1000, (4,))
            opt.zero_grad()
            (net(x, t) - x).square().mean().backward()  # a target: at the zero-initialised output, not 0
            opt.step()
            d = ema.current_decay()
            ema.update(net)
            for e, p in zip(loop, net.parameters()):
                e.lerp_(p.detach(), 1 - d)
        assert all(torch.equal(a, b) for a, b in zip(loop, ema.net.parameters()))
        weights.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
        assert (weights[-1] - init).abs().max() > 1e-3  # the steps moved the weights: the comparison has teeth
    assert torch.equal(weights[0], weights[1])


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
    from ldm.run import train

    cfg = make_cfg(["debug=fast", "logger=none", "metrics.features=null", "trainer.precision=bf16-mixed"])
    train.main(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    for key in ("stage1/val_loss", "stage2/val_loss", "recon/psnr", "recon/mse"):
        assert math.isfinite(metrics[key]), key
    fp32 = make_cfg(["debug=fast", "logger=none", "metrics.features=null"])
    assert train.cache.key(train.stage1_parts(fp32)) != metrics["stage1/key"]  # never served to fp32 runs
