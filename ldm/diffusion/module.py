"""LatentDiffusion: a UNet diffusion model trained on cached latents of a frozen autoencoder (Rombach et al., 2022)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Optional, Sequence

import lightning as L
import torch

from ldm.diffusion.ema import EMA
from ldm.diffusion.process import GaussianDiffusion
from ldm.diffusion.samplers import CountingDenoiser, check_sampler, clipped, guided, noise_generator, upgrade
from ldm.errors import ConfigError, Diverged
from ldm.utils.checkpoint import CLASS_KEY, qualname
from ldm.utils.config import build, build_optimizer
from ldm.utils.image_log import log_grid
from ldm.utils.progress import progress
from ldm.utils.seeds import VALIDATION_SEED, normal_like

LATENTS = ("mean", "sample")
SCALINGS = ("global", "channel")


class LatentDiffusion(L.LightningModule):
    """Trains `net` to denoise scaled latents; samples with the EMA weights and decodes with a given callable.

    Latent scaling is computed from the training latents (`fit_scaling`), never hard-coded, and kept in
    buffers so it travels with the checkpoint: `global` divides by one std (latent diffusion's
    scale_factor; `center` also subtracts the mean), `channel` standardises each channel.

    `noise_on_device` (set by the run from `sampler_noise`, not a hyperparameter: it does not change what is
    learned) draws the sampling noise on the model's device instead of the CPU (ldm.diffusion.samplers).
    """

    noise_on_device = False

    def __init__(self, latent_shape: Sequence[int], net: dict, process: dict, optimizer: dict,
                 lr_warmup_steps: int = 100, ema_decay: float = 0.999, ema_warmup: bool = True,
                 grad_clip: Optional[float] = 1.0, latent: str = "mean", scaling: str = "global",
                 center: bool = False, class_conditional: bool = False, num_classes: int = 0,
                 cond_drop_prob: float = 0.1, guidance_scale: float = 1.0, sampler: Optional[dict] = None,
                 num_vis: int = 36, vis_seed: int = 0, clip_x0: str | bool = "auto") -> None:
        super().__init__()
        if clip_x0 not in ("auto", True, False):
            raise ConfigError(f"diffusion.clip_x0={clip_x0!r}: choose auto, true or false")
        if latent not in LATENTS:
            raise ConfigError(f"diffusion.latent={latent!r}: choose one of {', '.join(LATENTS)}")
        if scaling not in SCALINGS:
            raise ConfigError(f"diffusion.scaling={scaling!r}: choose one of {', '.join(SCALINGS)}")
        if class_conditional and num_classes < 1:
            raise ConfigError("diffusion.class_conditional=true needs a labelled dataset (num_classes >= 1)")
        self.save_hyperparameters()
        self.latent_shape = tuple(latent_shape)
        c, h, _ = self.latent_shape
        self.num_classes = num_classes if class_conditional else 0
        self.net = self.build_net(net, c)
        self.net.check_input(h)
        self.process = GaussianDiffusion(build(process["schedule"]), process.get("parameterization", "eps"),
                                         process.get("min_snr_gamma"))
        self.ema = EMA(self.net, ema_decay, ema_warmup)
        self.register_buffer("latent_scale", torch.ones(c, 1, 1))
        self.register_buffer("latent_shift", torch.zeros(c, 1, 1))
        self.register_buffer("scaling_fitted", torch.tensor(False))
        self.sampler = build(upgrade(sampler)) if sampler else None
        check_sampler(self.sampler, self.process.num_timesteps)
        self._decode: Optional[Callable] = None
        self._latent_range: Optional[tuple[float, float]] = None
        self.stage_name = "stage2"


    def build_net(self, net: dict, channels: int) -> torch.nn.Module:
        """The denoiser on `channels` latent channels (a subclass changes its inputs, e.g. DDGAN's noise maps)."""
        return build(net, in_channels=channels, num_classes=self.num_classes)
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CLASS_KEY] = qualname(type(self))  # checked when the checkpoint is loaded

    # ---- latent scaling -------------------------------------------------------------------------------
    def draw_latents(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """The latent stage 2 learns: the posterior mean, or a posterior sample (config `latent`)."""
        return mean + std * normal_like(mean) if self.hparams.latent == "sample" else mean

    @torch.no_grad()
    def fit_scaling(self, mean: torch.Tensor, std: Optional[torch.Tensor] = None) -> None:
        """Scale (and shift) from all training latents so that scaled latents have unit std."""
        if len(mean) < 2:
            raise ConfigError("need at least 2 training latents to compute the latent scale")
        std = torch.zeros_like(mean[:, :1, :1, :1]) if std is None else std
        z = self.draw_latents(mean.double(), std.double())
        c = z.shape[1]
        per_channel = z.transpose(0, 1).reshape(c, -1)
        if self.hparams.scaling == "channel":
            shift, scale = per_channel.mean(1), 1 / per_channel.std(1).clamp_min(1e-8)
        else:
            shift = (z.mean() if self.hparams.center else z.new_zeros(())).expand(c)
            scale = (1 / (z - shift[0]).std().clamp_min(1e-8)).expand(c)
        self.latent_shift.copy_(shift.reshape(c, 1, 1).float())
        self.latent_scale.copy_(scale.reshape(c, 1, 1).float())
        self.scaling_fitted.fill_(True)

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_shift) * self.latent_scale

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.latent_scale + self.latent_shift

    @property
    def scale_factor(self) -> float:
        """One number for tables: the mean per-channel scale."""
        return float(self.latent_scale.mean())

    # ---- decoding (the frozen autoencoder stays outside: not a submodule, not in the checkpoint) -------
    def set_decoder(self, decode: Callable[[torch.Tensor], torch.Tensor],
                    latent_range: Optional[tuple[float, float]] = None) -> None:
        """The autoencoder's decoder, and the range its latents are bounded to where it has one (`Identity`:
        pixels in [-1, 1]), which `clip_x0` clips each step's x0 prediction to."""
        self._decode = decode
        self._latent_range = tuple(latent_range) if latent_range is not None else None

    def clip_range(self) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """The (lo, hi) bounds of x0 in the diffusion's scaled space, or None where x0 is not clipped.

        `clip_x0=auto` clips where the autoencoder bounds its latents (pixel-space diffusion, as pixel DDPM does:
        Ho et al., 2020, clip_denoised; Dhariwal & Nichol, 2021); `true` insists on it; `false` never clips."""
        mode = self.hparams.get("clip_x0", "auto")
        if mode is False or (mode == "auto" and self._latent_range is None):
            return None
        if self._latent_range is None:
            raise ConfigError("diffusion.clip_x0=true needs an autoencoder with a bounded latent range "
                              "(autoencoder=identity); use diffusion.clip_x0=auto or false")
        lo, hi = (self.scale(torch.full((1, *self.latent_shape), v, device=self.device)) for v in self._latent_range)
        return torch.minimum(lo, hi), torch.maximum(lo, hi)  # a negative scale would swap them

    def decode(self, z_scaled: torch.Tensor) -> torch.Tensor:
        if self._decode is None:
            raise RuntimeError("LatentDiffusion has no decoder: call set_decoder(autoencoder.decode) first")
        return self._decode(self.unscale(z_scaled))

    # ---- training -------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if not bool(self.scaling_fitted):
            raise RuntimeError("call fit_scaling(train latents) before training stage 2")

    def _labels(self, y: torch.Tensor, drop: bool) -> dict:
        if not self.num_classes:
            return {}
        if drop and self.hparams.cond_drop_prob > 0:  # null class some of the time: enables CFG
            y = torch.where(torch.rand(len(y), device=y.device) < self.hparams.cond_drop_prob,
                            torch.full_like(y, self.num_classes), y)
        return {"y": y}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        mean, std, y = batch
        z = self.scale(self.draw_latents(mean, std))
        loss = self.process.loss(self.net, z, **self._labels(y, drop=True))
        if not torch.isfinite(loss):
            raise Diverged(f"stage 2 loss became {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(z))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update(self.net)
        self.log("train/ema_decay", self.ema.current_decay(), batch_size=1)

    def configure_optimizers(self):
        opt = build_optimizer(self.hparams.optimizer, self.net.parameters())
        warmup = max(1, self.hparams.lr_warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        clip = self.hparams.grad_clip if gradient_clip_val is None else gradient_clip_val
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def validation_step(self, batch, batch_idx: int) -> None:
        mean, std, y = batch
        z = self.scale(mean)  # the deterministic latent: val loss comparable across steps and runs
        g = torch.Generator().manual_seed(VALIDATION_SEED + batch_idx)  # same t and noise at every validation
        t = self.process.sample_t(len(z), z.device, generator=g)
        noise = torch.randn(z.shape, generator=g).to(z)
        labels = self._labels(y, drop=False)
        raw = self.process.loss(self.net, z, t=t, noise=noise, **labels)
        ema = self.process.loss(self.ema.net, z, t=t, noise=noise, **labels)
        self.log("val/loss_raw", raw, batch_size=len(z), sync_dist=True)
        self.log("val/loss", ema, prog_bar=True, batch_size=len(z), sync_dist=True)

    # ---- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_latents(self, n: int, seed: int = 0, y: Optional[torch.Tensor] = None,
                       sampler: Optional[Callable] = None, use_ema: bool = True,
                       callback: Optional[Callable[[dict], None]] = None) -> tuple[torch.Tensor, int]:
        """n scaled latents from the configured sampler (its `callback` sees each step); returns them and the NFE."""
        sampler = sampler or self.sampler
        if sampler is None:
            raise ConfigError("no sampler configured: pass sampler=... (conf/sampler/)")
        g = noise_generator(seed, self.device if self.noise_on_device else None)
        x = torch.randn((n, *self.latent_shape), generator=g, device=g.device).to(self.device)
        net = self.ema.net if use_ema else self.net
        if y is None and self.num_classes:
            y = torch.arange(n, device=self.device) % self.num_classes
        denoiser = guided(net, y if self.num_classes else None, self.hparams.guidance_scale, self.num_classes)
        bounds = self.clip_range()
        denoiser = CountingDenoiser(clipped(denoiser, self.process, *bounds) if bounds else denoiser)
        z = sampler(denoiser, self.process, x, generator=g, callback=callback)
        return z, denoiser.nfe

    @torch.no_grad()
    def generate(self, n: int, seed: int = 0, batch_size: int = 500, show: bool = False,
                 label: Optional[int] = None, **kw) -> tuple[torch.Tensor, int]:
        """n decoded images (CPU, clamped to [-1, 1]) and the NFE per sample; batch i draws from seed + i.
        `label`: every image of this class (class-conditional models); `show`: a bar of sampler steps."""
        out, nfe = [], 0
        steps = getattr(self.sampler, "keywords", {}).get("steps")  # the bar's total, where the sampler says
        total = -(-n // batch_size) * steps if steps else None
        with progress(desc="sampling", unit="step", total=total, leave=False) if show else nullcontext() as bar:
            for i in range(0, n, batch_size):
                step = (lambda state: bar.update(1)) if show else None
                b = min(batch_size, n - i)
                if label is not None:
                    kw["y"] = torch.full((b,), label, dtype=torch.long, device=self.device)
                z, nfe = self.sample_latents(b, seed=seed + i, callback=step, **kw)
                out.append(self.decode(z).clamp(-1, 1).cpu())
        return torch.cat(out), nfe

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self._decode is None:
            return
        self.log_figures()

    @torch.no_grad()
    def log_figures(self, rows: int = 3, cols: int = 6) -> None:
        """Sample grid (EMA weights, fixed seed) and the sampler's trajectory for `rows` samples: x_t decoded
        above the x0 prediction at `cols` of its steps, recorded by the sampler's callback."""
        images, _ = self.generate(self.hparams.num_vis, seed=self.hparams.vis_seed)
        log_grid(self.trainer, "stage2_samples", images, nrow=6, title=f"samples (EMA), step {self.global_step}")
        steps: list[dict] = []
        self.sample_latents(rows, seed=self.hparams.vis_seed, callback=steps.append)
        picked = [steps[i] for i in sorted({round(j * (len(steps) - 1) / max(1, cols - 1)) for j in range(cols)})]
        grid = []
        for r in range(rows):
            grid += [self.decode(torch.stack([s["x"][r] for s in picked])).clamp(-1, 1),
                     self.decode(torch.stack([s["denoised"][r] for s in picked])).clamp(-1, 1)]
        log_grid(self.trainer, "stage2_denoising", torch.cat(grid), nrow=len(picked), rows=["x_t", "x0 pred"] * rows,
                 cols=[f"t={s['t']}" for s in picked], title=f"sampling trajectory, step {self.global_step}")
