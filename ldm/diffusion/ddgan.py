"""Denoising Diffusion GAN (Xiao et al., 2022, "Tackling the Generative Learning Trilemma with Denoising Diffusion
GANs"): the GAN-diffusion hybrid of claim C6, as a stage-2 option on any autoencoder's latents (`diffusion=ddgan`).

A diffusion process with a few large steps (T = 2-8; the paper's best CIFAR-10 model uses 4), whose reverse
steps are not Gaussian: each p(x_{t-1} | x_t) is modelled implicitly by a conditional generator that predicts
x0' = G(x_t, z, t) and steps back with the DDPM posterior q(x_{t-1} | x_t, x0'), trained adversarially against a
time-conditioned discriminator D(x_{t-1}, x_t, t) that sees real pairs (x_{t-1} ~ q(x_{t-1} | x0),
x_t ~ q(x_t | x_{t-1})) and fake ones (x_{t-1} from the posterior at x0').

Differences from the paper, all stated in conf/diffusion/ddgan.yaml: G is this project's UNet (the same network
family as stage 2's diffusion rows) with the noise z as extra input channels (the paper maps a 100-d z into its
normalisation layers); D is small (latents are 2x4x4 to 4x16x16, not 32x32x3 images).

Sampling is DDPM's ancestral sampler over the T steps with the generator as its x0 denoiser (the posterior step is
shared code: `posterior_step`), so NFE = T and everything downstream (decoding, clipping, figures, metrics,
checkpoint, cache) is LatentDiffusion's.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ldm.diffusion.module import LatentDiffusion
from ldm.diffusion.process import GaussianDiffusion
from ldm.diffusion.samplers import CountingDenoiser, clipped, noise_generator, sample_ddpm
from ldm.diffusion.spacing import even
from ldm.errors import ConfigError, Diverged
from ldm.losses import r1_penalty
from ldm.utils.config import build, build_optimizer
from ldm.utils.seeds import VALIDATION_SEED


def posterior_step(process: GaussianDiffusion, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
    """A sample of the DDPM posterior q(x_{t-1} | x_t, x0) at integer steps t (N,); t = 0 returns x0 itself (the
    step before the first is the data). The same formula as `sample_ddpm`'s step (tests check they agree)."""
    shape = (-1, *[1] * (x0.dim() - 1))
    a = process.alpha_bar(t, x0).reshape(shape)
    prev = (t - 1).clamp_min(0)
    a_prev = torch.where((t > 0).reshape(shape), process.alpha_bar(prev, x0).reshape(shape), torch.ones_like(a))
    beta = 1 - a / a_prev
    mean = (a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x_t) / (1 - a)
    var = beta * (1 - a_prev) / (1 - a)
    return torch.where((t > 0).reshape(shape), mean + var.clamp_min(0).sqrt() * noise, x0)


def forward_pair(process: GaussianDiffusion, x0: torch.Tensor, t: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A real pair (x_{t-1}, x_t): x_{t-1} ~ q(x_{t-1} | x0) (x0 itself at t = 0), then one forward step
    x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps (the paper's q_sample_pairs)."""
    shape = (-1, *[1] * (x0.dim() - 1))
    n1 = torch.randn(x0.shape, generator=generator).to(x0)
    n2 = torch.randn(x0.shape, generator=generator).to(x0)
    prev = process.q_sample(x0, (t - 1).clamp_min(0), n1)
    x_prev = torch.where((t > 0).reshape(shape), prev, x0)
    beta = process.betas.to(x0)[t.to(x0.device)].reshape(shape)
    return x_prev, (1 - beta).sqrt() * x_prev + beta.sqrt() * n2


class DenoisingDiffusionGAN(LatentDiffusion):
    """Stage 2 as a Denoising Diffusion GAN: `net` (a UNet) is the generator G(x_t, z, t) -> x0, trained with
    `discriminator` D(x_{t-1}, x_t, t), the non-saturating loss and lazy R1 on real pairs; EMA of G samples.

    Args beyond LatentDiffusion's: `steps` (T), `beta_min`/`beta_max` (the VP schedule at T points),
    `z_channels` (noise maps fed to G), `discriminator` (a config), `disc_optimizer`, `adv_loss`, `r1_gamma`,
    `lazy_reg` (R1 every k discriminator steps, scaled by k). The configured stage-2 `sampler` is not used:
    sampling is the T-step posterior chain (NFE = T)."""

    plateau_signal = False  # its val/loss is a sample's x0 error, not what training minimises: to the cap

    def __init__(self, latent_shape: Sequence[int], net: dict, optimizer: dict, discriminator: dict,
                 disc_optimizer: dict, adv_loss: dict, steps: int = 4, beta_min: float = 0.1, beta_max: float = 20.0,
                 *, z_channels: int, r1_gamma: float, lazy_reg: int = 15, process: Optional[dict] = None,
                 **kw) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 16:
            raise ConfigError(f"diffusion.steps={steps}: a Denoising Diffusion GAN takes 1-16 steps (paper: 2-8)")
        if z_channels < 0 or lazy_reg < 1 or r1_gamma < 0:
            raise ConfigError("diffusion.z_channels and diffusion.r1_gamma must be >= 0, diffusion.lazy_reg >= 1")
        kw.pop("sampler", None)  # sampling is the T-step posterior chain, not a configured sampler
        schedule = {"_target_": "ldm.diffusion.schedules.vp", "timesteps": steps, "beta_min": beta_min,
                    "beta_max": beta_max}
        super().__init__(latent_shape, net, {"schedule": schedule, "parameterization": "x0"}, optimizer, **kw)
        self.automatic_optimization = False
        self.discriminator = build(discriminator, in_channels=self.latent_shape[0])
        self.adv_loss = build(adv_loss)

    def build_net(self, net: dict, channels: int) -> torch.nn.Module:
        """The generator G(x_t, z, t) -> x0: the UNet with the noise maps z as extra input channels."""
        return build(net, in_channels=channels + self.hparams.z_channels, out_channels=channels,
                     num_classes=self.num_classes)

    @property
    def d_steps(self) -> int:
        """Discriminator steps taken: one per batch, and each batch takes two optimizer steps (D, then G), which
        Lightning counts in global_step; a resumed run therefore continues the lazy-R1 schedule exactly."""
        return self.global_step // 2

    # ---- the generator as a denoiser -----------------------------------------------------------------
    def noise_maps(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        where = generator.device if generator is not None else "cpu"
        return torch.randn((n, self.hparams.z_channels, *self.latent_shape[1:]), generator=generator,
                           device=where).to(self.device)

    def generator(self, net: Callable, generator: Optional[torch.Generator] = None, **labels) -> Callable:
        """x0' = G(x_t, z, t) with fresh noise maps z at every call: the implicit reverse step's x0."""
        return lambda x, t: net(torch.cat([x, self.noise_maps(len(x), generator)], 1), t, **labels)

    # ---- training -------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> None:
        mean, std, y = batch
        x0 = self.scale(self.draw_latents(mean, std))
        labels = self._labels(y, drop=True)
        t = self.process.sample_t(len(x0), x0.device)
        x_prev, x_t = forward_pair(self.process, x0, t)
        opt_g, opt_d = self.optimizers()
        g = self.generator(self.net, **labels)

        # discriminator: real (x_{t-1}, x_t) vs the posterior step at G's x0'
        self.toggle_optimizer(opt_d)
        r1 = self.hparams.r1_gamma > 0 and self.d_steps % self.hparams.lazy_reg == 0
        real_in = x_prev.detach().requires_grad_(r1)
        real = self.discriminator(real_in, x_t, t)
        with torch.no_grad():
            fake_prev = posterior_step(self.process, g(x_t, t), x_t, t, torch.randn_like(x0))
        fake = self.discriminator(fake_prev, x_t, t)
        d_loss = self.adv_loss.discriminator(real, fake)
        if r1:
            d_loss = d_loss + 0.5 * self.hparams.r1_gamma * self.hparams.lazy_reg * r1_penalty(real, real_in)
        self._step(opt_d, d_loss, "discriminator")
        self.untoggle_optimizer(opt_d)

        # generator: fool D with a fresh x0'
        self.toggle_optimizer(opt_g)
        fake_prev = posterior_step(self.process, g(x_t, t), x_t, t, torch.randn_like(x0))
        g_loss = self.adv_loss.generator(self.discriminator(fake_prev, x_t, t))
        self._step(opt_g, g_loss, "generator")
        self.untoggle_optimizer(opt_g)
        self.log_dict({"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach(),
                       "train/logits_real": real.detach().mean(), "train/logits_fake": fake.detach().mean()},
                      batch_size=len(x0))
        self.log("train/loss", g_loss.detach(), prog_bar=True, batch_size=len(x0))

    def _step(self, opt, loss: torch.Tensor, name: str) -> None:
        if not torch.isfinite(loss):
            raise Diverged(f"stage 2 {name} loss became {loss.item()} at step {self.global_step}")
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.grad_clip:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        opt.step()

    def configure_optimizers(self):
        return [build_optimizer(self.hparams.optimizer, self.net.parameters()),
                build_optimizer(self.hparams.disc_optimizer, self.discriminator.parameters())]

    def validation_step(self, batch, batch_idx: int) -> None:
        """val/loss: the EMA generator's x0 error ||G(x_t, z, t) - x0||^2 at fixed t, z and noise, a within-run
        signal (a GAN's x0' is a sample, not the posterior mean, so this is not what training minimises)."""
        mean, _, y = batch
        x0 = self.scale(mean)
        g = torch.Generator().manual_seed(VALIDATION_SEED + batch_idx)
        t = self.process.sample_t(len(x0), x0.device, generator=g)
        _, x_t = forward_pair(self.process, x0, t, generator=g)
        labels = self._labels(y, drop=False)
        state = g.get_state()
        for key, net in (("val/loss_raw", self.net), ("val/loss", self.ema.net)):
            g.set_state(state)
            err = (self.generator(net, g, **labels)(x_t, t) - x0).pow(2).flatten(1).mean(1).mean()
            self.log(key, err, prog_bar=key == "val/loss", batch_size=len(x0), sync_dist=True)

    # ---- sampling -------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_latents(self, n: int, seed: int = 0, y: Optional[torch.Tensor] = None,
                       sampler: Optional[Callable] = None, use_ema: bool = True,
                       callback: Optional[Callable[[dict], None]] = None) -> tuple[torch.Tensor, int]:
        """n scaled latents from the T-step chain x_T ~ N(0, I) -> ... -> x_0 (NFE = T)."""
        g = noise_generator(seed, self.device if self.noise_on_device else None)
        x = torch.randn((n, *self.latent_shape), generator=g, device=g.device).to(self.device)
        if y is None and self.num_classes:
            y = torch.arange(n, device=self.device) % self.num_classes
        denoiser = self.generator(self.ema.net if use_ema else self.net, g,
                                  **({"y": y} if self.num_classes else {}))
        bounds = self.clip_range()
        denoiser = CountingDenoiser(clipped(denoiser, self.process, *bounds) if bounds else denoiser)
        steps = self.process.num_timesteps
        z = sample_ddpm(denoiser, self.process, x, steps=steps, spacing=even, generator=g, callback=callback)
        return z, denoiser.nfe
