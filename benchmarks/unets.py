"""The UNet implementations benchmarked side by side, at one equal configuration, and how to drive them.

`unets()` is the parameter of the comparison: name -> constructor(in_channels, size). "before" is the frozen
copy benchmarks/unet_before.py, "ours" is whatever ldm/nets/unet.py is now, "diffusers" is
`diffusers.UNet2DModel` configured to the same architecture (conf/diffusion/unet_s.yaml):

| ours (unet_s)                                  | diffusers.UNet2DModel                                    |
| ---------------------------------------------- | -------------------------------------------------------- |
| model_channels=32, channel_mult=[1, 2]         | block_out_channels=(32, 64)                              |
| num_res_blocks=2 (3 per level on the way up)   | layers_per_block=2 (up blocks get layers_per_block + 1)  |
| attention_resolutions=[2] (level 1) + mid      | ("DownBlock2D", "AttnDownBlock2D"), mirrored up, + mid   |
| num_heads=4 at 64 channels                     | attention_head_dim=16 (64 // 16 = 4 heads)               |
| GroupNorm(32, eps=1e-6), scale-shift time cond | norm_num_groups=32, norm_eps=1e-6, "scale_shift"         |
| mid attention with GroupNorm                   | attn_norm_num_groups=32 (None drops it under scale_shift) |
| sinusoidal [cos, sin], MLP 32 -> 128 -> 128    | flip_sin_to_cos=True, freq_shift=0, time_embedding 4x32  |

With these settings the parameter counts are equal and, with ours' weights copied in (`load_ours_into`),
the outputs agree to float rounding, so the two compute the same function and differ only in how.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

UNET_S = dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=2, attention_resolutions=[2], num_heads=4,
              dropout=0.0)
SHAPES = {"latent": (2, 4), "pixel": (1, 16)}  # name -> (channels, size): the VAE's 2x4x4 latent, 1x16x16 digits
BASELINE = "diffusers"

Constructor = Callable[[int, int], nn.Module]


def before_unet(in_channels: int, size: int) -> nn.Module:
    from benchmarks.unet_before import UNetBefore

    return UNetBefore(in_channels, **UNET_S)


def our_unet(in_channels: int, size: int) -> nn.Module:
    from ldm.nets.unet import UNet

    return UNet(in_channels, **UNET_S)


def diffusers_unet(in_channels: int, size: int) -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=size, in_channels=in_channels, out_channels=in_channels,
                       block_out_channels=(32, 64), layers_per_block=2,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       attention_head_dim=16, norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-6,
                       resnet_time_scale_shift="scale_shift", act_fn="silu", dropout=0.0,
                       flip_sin_to_cos=True, freq_shift=0, time_embedding_type="positional")


def unets() -> dict[str, Constructor]:
    """The implementations measured side by side: name -> constructor(in_channels, size). Add one here (e.g. a
    candidate rewrite) to get its rows in every UNet table; BASELINE is the one the ratios are taken to."""
    return {"before": before_unet, "ours": our_unet, BASELINE: diffusers_unet}


def before_is_ours() -> bool:
    """Whether ldm/nets/unet.py (and the group_norm it uses) is still the code frozen in unet_before.py."""
    import inspect

    from benchmarks import unet_before as before
    from ldm.nets import blocks
    from ldm.nets import unet as ours

    def code(fn) -> str:  # the source without its docstring (the frozen group_norm's docstring names its origin)
        parts = inspect.getsource(fn).split('"""')
        return parts[0] + parts[-1]

    names = ("timestep_embedding", "zero_init", "TimeResBlock", "SelfAttention", "Level", "UNet")
    try:
        return (all(inspect.getsource(getattr(ours, n)) == inspect.getsource(getattr(before, n)) for n in names)
                and code(blocks.group_norm) == code(before.group_norm))
    except (AttributeError, OSError, TypeError):
        return False


def output(y) -> torch.Tensor:
    """The predicted tensor: ours returns it, diffusers wraps it (`net(x, t).sample`)."""
    return y.sample if hasattr(y, "sample") else y


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---- numerical equivalence: ours' weights into diffusers (the public mapping, ldm.interop.diffusers) -----------
def load_ours_into(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy ours' weights into the diffusers model (strict: every parameter of both is mapped)."""
    from ldm.interop.diffusers import unet_state_dict

    sd = unet_state_dict(ours.state_dict(), len(UNET_S["channel_mult"]), UNET_S["num_res_blocks"])
    theirs.load_state_dict(sd, strict=True)


@torch.no_grad()
def max_output_difference(ours: nn.Module, theirs: nn.Module, in_channels: int, size: int) -> dict:
    """Randomise ours (its zero-initialised layers would hide differences), copy into diffusers, and compare
    outputs on random inputs: the max |difference| and the output's RMS, for scale."""
    g = torch.Generator().manual_seed(0)
    for name, p in ours.named_parameters():  # norm scales around 1, everything else around 0
        p.copy_(torch.randn(p.shape, generator=g) * 0.1 + float("norm" in name and name.endswith("weight")))
    load_ours_into(ours, theirs)
    x = torch.randn(8, in_channels, size, size, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    a, b = output(ours(x, t)), output(theirs(x, t))
    return {"max_abs_diff": (a - b).abs().max().item(), "output_rms": a.pow(2).mean().sqrt().item()}
