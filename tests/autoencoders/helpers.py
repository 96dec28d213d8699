"""Tiny modules, digits and a tiny Trainer shared by the autoencoder tests."""

from __future__ import annotations

import functools

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from ldm.callbacks import StepBudget

BACKBONE = {"ch": 8, "ch_max": 16, "f": 4, "num_res_blocks": 1, "latent_channels": 2}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-3, "betas": [0.5, 0.9]}
SMALL_D = {"_target_": "ldm.nets.discriminators.NLayerDiscriminator", "ch": 8, "n_layers": 2}
SMALL_JOINT = {"_target_": "ldm.nets.discriminators.JointDiscriminator", "ch": 4, "z_ch": 8, "hidden": 16}


@functools.lru_cache(maxsize=1)
def _digits() -> torch.Tensor:
    from ldm.data.digits import DigitsDataModule

    dm = DigitsDataModule(image_size=16)
    dm.setup()
    return dm.split("train").images


def digits(n: int) -> torch.Tensor:
    """The first n training digits, 16x16 in [-1, 1]."""
    return _digits()[:n].clone()


def fit(module: L.LightningModule, x: torch.Tensor, steps: int, batch_size: int = 8,
        callbacks: tuple[L.Callback, ...] = ()) -> L.Trainer:
    """Train `module` for `steps` batches of `x` (cycled) with the project's batch-counting budget."""
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), batch_size=batch_size)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=-1, max_steps=-1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[StepBudget(steps), *callbacks])
    trainer.fit(module, train_dataloaders=loader)
    return trainer


def adam_steps(optimizer) -> int:
    """How many times an Adam optimizer has stepped (0 if never)."""
    states = [s for s in optimizer.state.values() if "step" in s]
    return int(states[0]["step"]) if states else 0


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if v.is_floating_point())
