"""The autoencoder interface diffusion code sees, plus what every stage-1 module shares."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Optional

import lightning as L
import torch

from ldm.errors import Diverged
from ldm.metrics.reconstruction import psnr
from ldm.utils.config import build_optimizer
from ldm.utils.figures import log_grid


class Autoencoder(L.LightningModule):
    """`latent_shape`, `encode`, `encode_distribution`, `decode`: all latent diffusion asks of stage 1.

    Subclasses implement the four interface members and their own `training_step`; this base adds
    the optimizer from config, validation (loss, PSNR) and the reconstruction / prior-sample grids.
    """

    def __init__(self, image_size: int, in_channels: int, optimizer: Optional[dict] = None,
                 num_vis: int = 32) -> None:
        super().__init__()
        self.image_size, self.in_channels, self.num_vis = image_size, in_channels, num_vis
        self.optimizer_cfg = optimizer
        self._vis_batch: Optional[torch.Tensor] = None

    # ---- the interface ---------------------------------------------------------------------------
    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent."""

    @abstractmethod
    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Posterior (mean, std); std is None for deterministic encoders."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent: the posterior mean where there is one."""
        return self.encode_distribution(x)[0]

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (N, C, h, w) -> image (N, C, H, W), roughly in [-1, 1]."""

    # ---- shared behaviour ------------------------------------------------------------------------
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def sample_prior(self, n: int, seed: int = 0) -> torch.Tensor:
        """Decode z ~ N(0, I) of the latent shape directly (shows where the latent space has holes)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn((n, *self.latent_shape), generator=g).to(self.device)
        return self.decode(z)

    def configure_optimizers(self) -> Any:
        return build_optimizer(self.optimizer_cfg, self.parameters())

    def check_finite(self, loss: torch.Tensor, name: str = "loss") -> None:
        if not torch.isfinite(loss):
            raise Diverged(f"stage 1 {name} became {loss.item()} at step {self.global_step}")

    def validation_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms on a validation batch; keys end up as `val/<key>`; `loss` is what best.ckpt tracks."""
        raise NotImplementedError

    def validation_step(self, batch, batch_idx: int) -> None:
        x, _ = batch
        if batch_idx == 0:
            self._vis_batch = x[: self.num_vis]
        terms = self.validation_loss(x)
        terms["psnr"] = psnr(self.reconstruct(x), x).mean()
        loss = terms.pop("loss")
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, batch_size=len(x), sync_dist=True)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(x), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self._vis_batch is None:
            return
        self.log_figures(self._vis_batch)

    @torch.no_grad()
    def log_figures(self, x: torch.Tensor) -> None:
        """Reconstruction grid (rows alternate real / reconstructed) and a prior-sample grid."""
        n = len(x)
        cols = min(8, n)
        rows = []
        for i in range(0, n, cols):
            real = x[i:i + cols]
            rows += [real, self.reconstruct(real).clamp(-1, 1)]
        log_grid(self.trainer, "stage1_recon", torch.cat(rows), nrow=cols)
        log_grid(self.trainer, "stage1_prior", self.sample_prior(self.num_vis, seed=0).clamp(-1, 1), nrow=8)
