"""Training progress read off a Lightning trainer, for modules and callbacks alike (no callback imports)."""

from __future__ import annotations

from typing import Any


def batches_done(trainer: Any) -> int:
    """Training batches completed so far (restored on resume; counts one per batch, whatever the optimizers)."""
    return trainer.fit_loop.epoch_loop.batch_progress.total.completed
