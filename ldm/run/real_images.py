"""Real test images of a run's dataset as a grid, laid out as the run's `samples.png` (8 x 8, the first 64): what a
report puts beside each row's samples. The claims report (ldm.analysis.claims) calls `grid` through the entry's
dispatch (ldm.cli), since analysis never builds data or models itself."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

N = 64  # as many as a run's samples.png shows (ldm.run.evaluation.generation)


def grid(config: Path, path: Path, n: int = N) -> Optional[Path]:
    """The first `n` test images of the dataset in a run's resolved `config.yaml`, as a PNG at `path`; None where
    the config names no dataset or its test split is empty."""
    from ldm.data.base import batches
    from ldm.utils.config import build
    from ldm.utils.images import save_grid

    cfg = OmegaConf.load(config)
    if "data" not in cfg or "_target_" not in cfg.data:
        return None
    dm = build(cfg.data)
    test = dm.split("test")
    if len(test) == 0:
        return None
    images = next(batches(test, min(n, len(test))))[0]  # any split kind (in memory or lazy), in its order
    return save_grid(images, path, nrow=8, title=f"real test images (the first {len(images)})")
