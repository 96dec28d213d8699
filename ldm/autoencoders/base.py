"""The stage-1 interfaces: `LatentModel` (latent space + decoder, what every row shares) and `Autoencoder`
(+ encoder: what latent diffusion needs)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable, Optional

import lightning as L
import torch

from ldm.errors import Diverged, NoEncoderError
from ldm.metrics.reconstruction import psnr
from ldm.utils.checkpoint import CLASS_KEY, qualname
from ldm.utils.config import build_optimizer
from ldm.utils.image_log import log_grid
from ldm.utils.steps import batches_done


class LatentModel(L.LightningModule):
    """A stage-1 model with a latent space and a decoder: `latent_shape`, `decode`, prior samples.

    What every row shares: the optimizer from config, the batch clock, manual-optimisation steps,
    validation (`val/loss`, plus what `validation_extras` adds) and the prior-sample grid. Rows that can
    also map images to latents are `Autoencoder`s; a plain GAN is only a `LatentModel`, so whether a row
    can take part in latent diffusion is a question of its type, not of a flag.
    """

    # (lo, hi) where the latents are bounded by construction (identity: the pixels), else None; latent diffusion
    # clips its x0 predictions to it (diffusion.clip_x0)
    latent_range: Optional[tuple[float, float]] = None
    # capabilities, asked of the class by code that must not build a model (e.g. the claims dry run's estimate):
    encodes: bool = False  # maps images to latents, so latent diffusion can train on it (True for every Autoencoder)
    pixel_space: bool = False  # the latent is the image itself: nothing to train in stage 1 (identity)
    # its val/loss tracks what training improves, so a plateau rule (stage<k>.plateau) may stop it; adversarial rows
    # say False (a generator loss against a moving discriminator is no such signal) and train to the cap
    plateau_signal: bool = True

    def __init__(self, *, image_size: int, in_channels: int, num_vis: int, optimizer: Optional[dict] = None) -> None:
        super().__init__()
        self.image_size, self.in_channels, self.num_vis = image_size, in_channels, num_vis
        self.optimizer_cfg = optimizer  # None only for rows with nothing to train (identity)
        self._vis_batch: Optional[torch.Tensor] = None

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (N, C, h, w) -> image (N, C, H, W), roughly in [-1, 1]."""

    @classmethod
    def missing_encoder(cls) -> NoEncoderError:
        """The error for asking this row to encode (it is not an `Autoencoder`): what to use instead."""
        return NoEncoderError(f"{cls.__name__} has no encoder, so it cannot map images to latents: use stage=stage1")

    # ---- shared behaviour ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CLASS_KEY] = qualname(type(self))  # checkpoints say which row they hold (checked on load)

    def prior_noise(self, n: int, seed: Optional[int] = None) -> torch.Tensor:
        """z ~ N(0, I) of the latent shape on this module's device; a seed gives the same z on every device."""
        if seed is None:
            return torch.randn((n, *self.latent_shape), device=self.device)
        g = torch.Generator().manual_seed(seed)
        return torch.randn((n, *self.latent_shape), generator=g).to(self.device)

    @torch.no_grad()
    def sample_prior(self, n: int, seed: int = 0) -> torch.Tensor:
        """Decode z ~ N(0, I) of the latent shape directly (shows where the latent space has holes)."""
        return self.decode(self.prior_noise(n, seed))

    @property
    def batch_step(self) -> int:
        """Training batches done (0 without a trainer): the clock for schedules such as `disc_start`.

        Not `global_step`, which in manual optimisation counts every optimizer step (two per GAN batch).
        """
        return batches_done(self._trainer) if self._trainer is not None else 0

    def configure_optimizers(self) -> Any:
        return build_optimizer(self.optimizer_cfg, self.parameters())

    def check_finite(self, loss: torch.Tensor, name: str = "loss") -> None:
        if not torch.isfinite(loss):
            raise Diverged(f"stage 1 {name} became {loss.item()} at step {self.batch_step}")

    def losses(self, x: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        """Scalar loss terms, with the total under `loss` (and optionally the reconstruction `x_hat`)."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """One automatic-optimisation step on `losses`; modules with a discriminator override this."""
        x, _ = batch
        terms = self.losses(x)
        self.check_finite(terms["loss"])
        x_hat = terms.pop("x_hat", None)
        if x_hat is not None:
            terms["psnr"] = psnr(x_hat.detach(), x).mean()
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=len(x))
        self.log("loss", terms["loss"], prog_bar=True, logger=False, batch_size=len(x))
        return terms["loss"]

    def optimize(self, opt: Any, loss_fn: Callable[[], dict[str, torch.Tensor]], name: str,
                 grad_clip: Optional[float] = None) -> dict[str, torch.Tensor]:
        """One manual-optimisation step of `opt` on `loss_fn()["loss"]` (Lightning's documented recipe).

        Toggling freezes every other optimizer's parameters, so e.g. the generator step leaves no
        gradients in the discriminator. Returns the loss terms, detached, for logging.
        """
        self.toggle_optimizer(opt)
        terms = loss_fn()
        self.check_finite(terms["loss"], name)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(terms["loss"])
        self.clip_gradients(opt, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        self.untoggle_optimizer(opt)
        return {k: v.detach() for k, v in terms.items()}

    def validation_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms on a validation batch; keys end up as `val/<key>`; `loss` is what best.ckpt tracks."""
        terms = self.losses(x, sample=False)
        terms.pop("x_hat", None)
        return terms

    def validation_extras(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Validation numbers beyond the loss terms (an `Autoencoder` adds its reconstruction PSNR)."""
        return {}

    def validation_step(self, batch, batch_idx: int) -> None:
        x, _ = batch
        if batch_idx == 0:
            self._vis_batch = x[: self.num_vis]
        terms = {**self.validation_loss(x), **self.validation_extras(x)}
        loss = terms.pop("loss")
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, batch_size=len(x), sync_dist=True)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(x), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self._vis_batch is None:
            return
        self.log_figures(self._vis_batch)

    @torch.no_grad()
    def log_figures(self, x: torch.Tensor) -> None:
        """The prior-sample grid: decoded z ~ N(0, I)."""
        log_grid(self.trainer, "stage1_prior", self.sample_prior(self.num_vis, seed=0).clamp(-1, 1), nrow=8,
                 title=f"decoded z ~ N(0, I), step {self.batch_step}")


class Autoencoder(LatentModel):
    """`latent_shape`, `encode`, `encode_distribution`, `decode`: all latent diffusion asks of stage 1.

    Subclasses implement the interface and either `losses` (one optimizer, automatic optimisation)
    or their own manual `training_step` (GANs, via `optimize`).
    """

    encodes = True

    @abstractmethod
    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Posterior (mean, std); std is None for deterministic encoders."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent: the posterior mean where there is one."""
        return self.encode_distribution(x)[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def validation_extras(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"psnr": psnr(self.reconstruct(x), x).mean()}

    @torch.no_grad()
    def log_figures(self, x: torch.Tensor) -> None:
        """The reconstruction grid (rows alternate real / reconstructed), then the prior-sample grid."""
        cols = min(8, len(x))
        rows = []
        for i in range(0, len(x), cols):
            real = x[i:i + cols]
            rows += [real, self.reconstruct(real).clamp(-1, 1)]
        log_grid(self.trainer, "stage1_recon", torch.cat(rows), nrow=cols, rows=["real", "recon"] * (len(rows) // 2),
                 title=f"validation images and reconstructions, step {self.batch_step}")
        super().log_figures(x)
