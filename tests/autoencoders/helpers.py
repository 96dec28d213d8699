"""Tiny modules, digits and a tiny Trainer shared by the autoencoder tests."""

from __future__ import annotations

import functools
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from ldm.run.callbacks import StepBudget

BACKBONE = {"ch": 8, "ch_max": 16, "f": 4, "num_res_blocks": 1, "latent_channels": 2, "dropout": 0.0}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-3, "betas": [0.5, 0.9]}
SMALL_D = {"_target_": "ldm.nets.discriminators.NLayerDiscriminator", "ch": 8, "n_layers": 2, "batch_norm": True}
SMALL_JOINT = {"_target_": "ldm.nets.discriminators.JointDiscriminator", "ch": 4, "z_ch": 8, "hidden": 16,
               "unary": False, "batch_norm": True, "dropout": 0.0}
ROWS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "autoencoder").glob("*.yaml")
              if not p.stem.startswith("_"))  # every row, discovered: a new row is tested without editing this


@functools.lru_cache(maxsize=None)
def row_config(row: str, debug: bool = True) -> str:
    """The autoencoder config `train.py autoencoder=<row> [debug=fast]` composes (as YAML: cached, immutable)."""
    from tests.conftest import compose_cfg

    cfg = compose_cfg([f"autoencoder={row}"] + (["debug=fast"] if debug else [])).autoencoder
    return OmegaConf.to_yaml(cfg, resolve=True)


def row_kwargs(row: str, **overrides) -> dict:
    """The keyword arguments of the row's class as its YAML gives them (tiny backbone), with `overrides`."""
    cfg = OmegaConf.to_container(OmegaConf.create(row_config(row)))
    cfg.pop("ckpt_path", None)
    cfg.pop("_target_")
    return {**cfg, **overrides}


def build_row(row: str, **overrides):
    """The module `train.py autoencoder=<row> debug=fast` builds, with `overrides` of its arguments."""
    cfg = OmegaConf.to_container(OmegaConf.create(row_config(row)))
    return hydra.utils.get_class(cfg["_target_"])(**row_kwargs(row, **overrides))


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
