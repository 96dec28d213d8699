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


class Plateau(L.Callback):
    """Stop a stage when its validation metric has stopped improving: the stated rule of a converged run.

    At every validation (every `val_every` batches), the value of `monitor` counts as an improvement when it beats
    the best so far by more than `min_rel_improvement` of the best's magnitude (lower is better for mode=min).
    After `patience` validations in a row without one, training stops at that validation's step; the stage's
    `max_steps` stays the cap. A non-finite value is never an improvement. `min_steps` (batches) must pass before
    a stop. The state (best, wait, the trace of every validation) is checkpointed, so a resumed stage stops where
    an uninterrupted one would.
    """

    def __init__(self, monitor: str = "val/loss", mode: str = "min", patience: int = 3,
                 min_rel_improvement: float = 0.01, min_steps: int = 0) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"plateau mode must be min or max, got {mode!r}")
        if int(patience) < 1:
            raise ValueError(f"plateau patience must be >= 1 validation, got {patience}")
        if not 0 <= float(min_rel_improvement) < 1:
            raise ValueError(f"plateau min_rel_improvement must be in [0, 1), got {min_rel_improvement}")
        self.monitor, self.mode, self.patience = monitor, mode, int(patience)
        self.min_rel, self.min_steps = float(min_rel_improvement), int(min_steps)
        self.best: float | None = None
        self.best_step: int | None = None
        self.wait = 0
        self.stopped_step: int | None = None
        self.trace: list[tuple[int, float]] = []

    def improves(self, value: float) -> bool:
        if value != value or value in (float("inf"), float("-inf")):
            return False
        if self.best is None:
            return True
        gain = (self.best - value) if self.mode == "min" else (value - self.best)
        return gain > self.min_rel * abs(self.best)

    def update(self, step: int, value: float) -> bool:
        """Take one validation's value at `step`; True when the rule says stop here."""
        self.trace.append((int(step), float(value)))
        if self.improves(value):
            self.best, self.best_step, self.wait = float(value), int(step), 0
            return False
        self.wait += 1
        if self.wait >= self.patience and step >= self.min_steps:
            self.stopped_step = int(step)
            return True
        return False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.stopped_step is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise KeyError(f"plateau monitor {self.monitor!r} was not logged at validation; the stage logs "
                           f"{sorted(k for k in trainer.callback_metrics if k.startswith('val/'))}")
        step = batches_done(trainer)
        if self.trace and self.trace[-1][0] == step:  # the budget's final validation repeats a periodic one
            return
        if self.update(step, float(value)):
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "wait": self.wait,
                "stopped_step": self.stopped_step, "trace": [list(t) for t in self.trace]}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step, self.wait = state["best"], state["best_step"], state["wait"]
        self.stopped_step = state["stopped_step"]
        self.trace = [(int(s), float(v)) for s, v in state["trace"]]

    def summary(self, stage: str, cap: int) -> dict:
        """The stage's stopping record: why it stopped (plateau | cap), where, and its best validation."""
        return {f"{stage}/stop": "plateau" if self.stopped_step is not None else "cap", f"{stage}/cap": int(cap),
                f"{stage}/best_step": self.best_step, f"{stage}/plateau_monitor": self.monitor}
