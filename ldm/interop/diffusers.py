"""ldm's latent diffusion in Hugging Face diffusers: the UNet as `UNet2DModel`, the sampler as a diffusers scheduler,
the latent scale as a shim, the autoencoder's decoder as a callable.

    from ldm.run.loading import load
    from ldm.interop.diffusers import to_diffusers, sample

    parts = to_diffusers(load("logs/train/runs/<run>"))   # or an export folder
    parts.unet.save_pretrained("my-unet"); parts.scheduler.save_pretrained("my-unet")
    images = sample(parts, noise, steps=50)                   # diffusers' UNet and scheduler, ldm's decoder

What maps, and where the two differ:
- **UNet.** ldm's `UNet` is `UNet2DModel` with the settings `unet_config` computes (block types from the attention
  levels, `layers_per_block = num_res_blocks`, scale-shift time conditioning, GroupNorm(32, eps 1e-6), sin/cos time
  features with `flip_sin_to_cos=True, freq_shift=0`; model_channels a multiple of 32, so that every GroupNorm
  has one group count as in diffusers); the weights map one to one (`unet_state_dict`; the fused
  1x1-conv qkv splits into diffusers' q, k, v Linears), so the outputs agree to float rounding. A class-conditional
  UNet maps to `num_class_embeds = num_classes + 1` (the last index is ldm's null class for guidance). Not mapped:
  attention levels of different widths (diffusers fixes the head dimension, ldm the head count).
- **Scheduler.** The same betas (`trained_betas`), `prediction_type` from ldm's parameterisation, no clipping,
  `set_alpha_to_one=True` (ldm's last step goes to the clean data). ldm's `trailing` spacing is diffusers'
  `timestep_spacing="trailing"` (equal timesteps); ldm's `even` (round(linspace(T-1, 0, n))) has no diffusers
  equivalent (diffusers' `linspace` rounds differently and its leading/ trailing shift the grid), so the converted
  scheduler uses `trailing` and `to_diffusers` says so when the run's sampler is `even`. DDIM (eta = 0) maps to
  `DDIMScheduler`; ldm's DPM-Solver++(2M) to `DPMSolverMultistepScheduler` is not checked here.
- **Latent scale.** ldm keeps a per-channel scale and shift (`latent_scale`, `latent_shift`, fitted on the training
  latents); diffusers' `AutoencoderKL.config.scaling_factor` is one scalar without a shift. `DiffusersParts.scale` /
  `unscale` are the exact shim; with `diffusion.scaling=global` (the default) and no centring, the scale is one
  number and `scaling_factor` equals it.
- **VAE.** ldm's autoencoders are not `AutoencoderKL` blocks (different backbone), so no weight conversion: the
  decoder is `DiffusersParts.decode`, a plain callable from unscaled latents to images in [-1, 1], which a diffusers
  pipeline calls where it would call `vae.decode(z / scaling_factor).sample`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ldm.errors import ConfigError

PREDICTION = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
SPACING = {"ldm.diffusion.spacing.trailing": "trailing"}  # ldm spacing -> diffusers timestep_spacing, where equal


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise ConfigError("the diffusers interop needs the diffusers package: .venv/bin/pip install -c "
                          "requirements/constraints.txt 'diffusers>=0.30' (it pulls no torchvision)") from None
    return diffusers


def unet_config(spec: dict, in_channels: int, num_classes: int, sample_size: int, groups: int = 32) -> dict:
    """`UNet2DModel(**unet_config(...))` has the architecture of the ldm UNet built from `spec` (the diffusion's
    `net` config: model_channels, channel_mult, num_res_blocks, attention_resolutions, num_heads) on
    `in_channels` latent channels, class-conditional when `num_classes` > 0; `groups`: every GroupNorm's count."""
    chs = [int(spec["model_channels"]) * m for m in spec["channel_mult"]]
    attn = [2 ** i in spec["attention_resolutions"] for i in range(len(chs))]
    widths = {c for c, a in zip(chs, attn) if a} | {chs[-1]}  # attention levels and the mid block
    if len(widths) != 1:
        raise ConfigError(f"UNet with attention at widths {sorted(widths)}: diffusers fixes the head dimension and "
                          f"ldm the head count, so only one attention width maps exactly")
    width, heads = widths.pop(), int(spec["num_heads"])
    if width % heads:
        raise ConfigError(f"attention width {width} is not divisible by num_heads={heads}")
    cfg = dict(sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
               block_out_channels=tuple(chs), layers_per_block=int(spec["num_res_blocks"]),
               down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
               up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
               attention_head_dim=width // heads, norm_num_groups=groups, attn_norm_num_groups=groups,
               norm_eps=1e-6, resnet_time_scale_shift="scale_shift", act_fn="silu", dropout=0.0,
               flip_sin_to_cos=True, freq_shift=0, time_embedding_type="positional")
    if num_classes:
        cfg["num_class_embeds"] = num_classes + 1
    return cfg


def unet_state_dict(sd: dict, levels: int, num_res_blocks: int) -> dict:
    """ldm UNet state dict renamed to `UNet2DModel`'s (the fused 1x1-conv qkv split into Linear q, k, v)."""
    out: dict = {}

    def copy(src: str, dst: str) -> None:
        for suffix in ("weight", "bias"):
            if f"{src}.{suffix}" in sd:
                out[f"{dst}.{suffix}"] = sd[f"{src}.{suffix}"]

    def res(src: str, dst: str) -> None:
        for a, b in (("norm1", "norm1"), ("conv1", "conv1"), ("emb", "time_emb_proj"), ("norm2", "norm2"),
                     ("conv2", "conv2"), ("skip", "conv_shortcut")):
            copy(f"{src}.{a}", f"{dst}.{b}")

    def attn(src: str, dst: str) -> None:
        copy(f"{src}.norm", f"{dst}.group_norm")
        for (name, w), b in zip(zip("qkv", sd[f"{src}.qkv.weight"].flatten(1).chunk(3)),
                                sd[f"{src}.qkv.bias"].chunk(3)):
            out[f"{dst}.to_{name}.weight"], out[f"{dst}.to_{name}.bias"] = w, b
        out[f"{dst}.to_out.0.weight"] = sd[f"{src}.proj.weight"].flatten(1)
        out[f"{dst}.to_out.0.bias"] = sd[f"{src}.proj.bias"]

    def level_blocks(src: str, dst: str, j: int) -> None:
        res(f"{src}.blocks.0", f"{dst}.resnets.{j}")
        if f"{src}.blocks.1.qkv.weight" in sd:
            attn(f"{src}.blocks.1", f"{dst}.attentions.{j}")

    copy("time_mlp.0", "time_embedding.linear_1")
    copy("time_mlp.2", "time_embedding.linear_2")
    if "class_emb.weight" in sd:
        out["class_embedding.weight"] = sd["class_emb.weight"]
    copy("conv_in", "conv_in")
    for i in range(levels):
        for j in range(num_res_blocks):
            level_blocks(f"down.{i * num_res_blocks + j}", f"down_blocks.{i}", j)
        if i < levels - 1:
            copy(f"downsample.{i}", f"down_blocks.{i}.downsamplers.0.conv")
    res("mid.blocks.0", "mid_block.resnets.0")
    attn("mid.blocks.1", "mid_block.attentions.0")
    res("mid.blocks.2", "mid_block.resnets.1")
    for j in range(levels):
        for b in range(num_res_blocks + 1):
            level_blocks(f"up.{j * (num_res_blocks + 1) + b}", f"up_blocks.{j}", b)
        if j < levels - 1:
            copy(f"upsample.{j}", f"up_blocks.{j}.upsamplers.0.conv")
    copy("norm_out", "conv_norm_out")
    copy("conv_out", "conv_out")
    return out


def unet_to_diffusers(net: Any, spec: dict, sample_size: int) -> Any:
    """ldm UNet `net` (built from `spec`) -> `diffusers.UNet2DModel` computing the same function (strict load:
    every weight mapped)."""
    groups = {m.num_groups for m in net.modules() if isinstance(m, torch.nn.GroupNorm)}
    if len(groups) != 1:  # ldm takes gcd(32, channels) per layer, diffusers one count for all
        raise ConfigError(f"this UNet's GroupNorms use {sorted(groups)} groups (model_channels not a multiple of "
                          f"32); diffusers' UNet2DModel has one group count: use model_channels = 32 k")
    model = _diffusers().UNet2DModel(**unet_config(spec, net.conv_in.in_channels, net.num_classes, sample_size,
                                                   groups.pop()))
    model.load_state_dict(unet_state_dict(net.state_dict(), len(spec["channel_mult"]), int(spec["num_res_blocks"])),
                          strict=True)
    return model.eval()


def scheduler_config(process: Any) -> dict:
    """A `DDIMScheduler` config with ldm's betas and parameterisation (see the module docstring on spacing)."""
    return dict(num_train_timesteps=process.num_timesteps, trained_betas=process.betas.tolist(),
                prediction_type=PREDICTION[process.parameterization], clip_sample=False, set_alpha_to_one=True,
                timestep_spacing="trailing", steps_offset=0)


@dataclass
class DiffusersParts:
    unet: Any                          # diffusers.UNet2DModel (the EMA weights: what ldm samples with)
    scheduler: Any                     # diffusers.DDIMScheduler
    latent_scale: torch.Tensor         # (C, 1, 1): scaled = (z - shift) * scale, what the UNet sees
    latent_shift: torch.Tensor
    decode: Callable[[torch.Tensor], torch.Tensor]  # unscaled latents -> images in [-1, 1]
    num_classes: int = 0               # > 0: class labels 0..num_classes-1, and num_classes is the null class
    notes: tuple[str, ...] = ()

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_shift) * self.latent_scale

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.latent_scale + self.latent_shift

    @property
    def scaling_factor(self) -> Optional[float]:
        """diffusers' scalar `scaling_factor`, where ldm's scale is one number without a shift; else None."""
        s = self.latent_scale.flatten()
        return float(s[0]) if bool((s == s[0]).all()) and not bool(self.latent_shift.abs().gt(0).any()) else None


def _qualname(fn: Any) -> str:
    """module.name of a function, also through functools.partial wrappers (Hydra's `_partial_` targets)."""
    while hasattr(fn, "func"):
        fn = fn.func
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__name__', type(fn).__name__)}"


def to_diffusers(model: Any) -> DiffusersParts:
    """An ldm model (`ldm.run.loading.load` of a run or an export) as diffusers parts."""
    ld = model.diffusion
    if ld is None:
        raise ConfigError("this model has no latent diffusion (stage 2) to convert: train both stages")
    net, spec = ld.ema.net, dict(ld.hparams["net"])
    target = str(spec["_target_"]) if "_target_" in spec else "?"
    if not target.endswith("nets.unet.UNet"):
        raise ConfigError(f"only ldm's UNet converts to UNet2DModel, not {target}")
    notes = []
    spacing = _qualname(getattr(ld.sampler, "keywords", {}).get("spacing"))
    if spacing not in SPACING:
        notes.append(f"the run samples with {spacing.rsplit('.', 1)[-1]} spacing, which diffusers has no equivalent "
                     f"of; the scheduler uses trailing (ldm: sampler/spacing=trailing gives the same timesteps)")
    scheduler = _diffusers().DDIMScheduler(**scheduler_config(ld.process))
    ae = model.autoencoder
    unet = unet_to_diffusers(net, spec, ld.latent_shape[-1])
    return DiffusersParts(unet, scheduler, ld.latent_scale.detach().clone(),
                          ld.latent_shift.detach().clone(), lambda z: ae.decode(z).clamp(-1, 1), ld.num_classes,
                          tuple(notes))


@torch.no_grad()
def sample(parts: DiffusersParts, noise: torch.Tensor, steps: int, labels: Optional[torch.Tensor] = None,
           decode: bool = True) -> torch.Tensor:
    """DDIM (eta = 0) with diffusers' UNet and scheduler from `noise` (scaled latent space), decoded with ldm's
    decoder: what ldm's `sample_ddim` with trailing spacing gives from the same noise."""
    parts.scheduler.set_timesteps(steps)
    z = noise
    kw = {}
    if parts.num_classes:
        kw["class_labels"] = labels if labels is not None else torch.full((len(z),), parts.num_classes)
    for t in parts.scheduler.timesteps:
        out = parts.unet(z, t, **kw).sample
        z = parts.scheduler.step(out, t, z, eta=0.0).prev_sample
    return parts.decode(parts.unscale(z)) if decode else z
