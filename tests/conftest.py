"""Shared fixtures: compose configs in-process (no subprocess per test; `import lightning` is slow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("LDM_ROOT", str(ROOT))
if "OMP_NUM_THREADS" not in os.environ:  # respect an explicit thread cap (parallel test runs)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def compose_cfg(overrides: list[str] = (), config_name: str = "train", output_dir: Path | None = None) -> DictConfig:
    """Compose like `python train.py <overrides>` would, with hydra's runtime filled in (output_dir).

    A train config also gets the run directory's `.hydra/config.yaml` and `overrides.yaml`, as Hydra writes
    them, so evaluate.py, tables and resume find what they find in a real run.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.runtime.cwd = str(ROOT)
            cfg.hydra.job.num = 0
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.cache_dir = str(output_dir.parent / ".cache")
    HydraConfig.instance().set_config(cfg)
    GlobalHydra.instance().clear()
    if output_dir is not None and config_name == "train":
        job = OmegaConf.to_container(cfg, resolve=False)
        job.pop("hydra")
        (output_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        (output_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(job))
        (output_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(list(overrides)))
    return cfg


def resume_vs_straight(make_cfg, common: list[str], stage: str, full: int, half: int, resume_key: str):
    """Train `full` steps straight, `half` steps, then resume the half run to `full`.

    Returns (straight, half, resumed) last.ckpt contents of `stage` and the resumed run's metrics.
    """
    from ldm.run import train

    def last(cfg):
        return torch.load(Path(cfg.paths.output_dir) / "checkpoints" / stage / "last.ckpt", weights_only=False)

    straight = make_cfg(common + [f"{stage}.max_steps={full}"], name="straight")
    train.train(straight)
    half_cfg = make_cfg(common + [f"{stage}.max_steps={half}"], name="half")
    train.train(half_cfg)
    half_ckpt = Path(half_cfg.paths.output_dir) / "checkpoints" / stage / "last.ckpt"
    resumed = make_cfg(common + [f"{stage}.max_steps={full}", f"{resume_key}={half_ckpt}"], name="resumed")
    metrics = train.train(resumed)
    return last(straight), last(half_cfg), last(resumed), metrics


@pytest.fixture
def make_cfg(tmp_path):
    """make_cfg(["debug=fast", ...]) -> composed config writing into a fresh tmp run directory."""
    counter = iter(range(1000))

    def _make(overrides=(), config_name="train", name=None):
        return compose_cfg(overrides, config_name, tmp_path / (name or f"run{next(counter)}"))

    return _make


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory) -> Path:
    """One finished `debug=fast` run (seed 1, evaluator metrics, no logger), shared by the tests that only read a
    run: evaluate, sample, export, safe loading. Copy it before changing anything in it."""
    from ldm.run import train

    out = tmp_path_factory.mktemp("fast_run") / "train"
    assert train.main(compose_cfg(["debug=fast", "logger=none", "seed=1"], output_dir=out)) is not None
    return out
