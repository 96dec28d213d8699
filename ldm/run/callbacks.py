"""Callbacks the pipeline always installs: a step budget, per-step seeding, a progress bar that knows the budget."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from ldm.utils.seeds import step_seed
from ldm.utils.steps import batches_done


class StepBudget(L.Callback):
    """Stop after `max_steps` training batches and validate (hence checkpoint) at that last step.

    A step is one batch for every module, also GANs stepping two optimizers per batch (Lightning's
    `global_step` would count those twice), so stage budgets mean the same thing in every row.
    """

    def __init__(self, max_steps: int) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if batches_done(trainer) >= self.max_steps:
            trainer.should_stop = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        # `completed` is incremented right after this hook; should_stop makes Lightning validate now.
        if batches_done(trainer) + 1 >= self.max_steps:
            trainer.should_stop = True


class StepSeed(L.Callback):
    """Re-seed torch before every training batch from (seed, batch index, rank).

    Noise drawn in a training step (posterior samples, diffusion t and eps, dropout) is then a pure
    function of the step, so a run resumed from a checkpoint continues exactly as an uninterrupted one.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        step = batches_done(trainer)
        torch.manual_seed(step_seed(self.seed, step, trainer.global_rank))


class StepProgressBar(TQDMProgressBar):
    """TQDM bar whose total is the stage's step budget (the training stream itself is endless)."""

    @property
    def total_train_batches(self):
        budget = next((cb.max_steps for cb in self.trainer.callbacks if isinstance(cb, StepBudget)), None)
        return budget if budget is not None else super().total_train_batches

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version says nothing about training
        return metrics

    def on_train_epoch_start(self, trainer: L.Trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.initial = batches_done(trainer)
        self.train_progress_bar.set_description(getattr(trainer.lightning_module, "stage_name", "train"))
