"""Train one ablation cell: `python train.py [group=option ...] [key=value ...]` (see conf/train.yaml)."""

import os

import hydra
from omegaconf import DictConfig

os.environ.setdefault("LDM_ROOT", os.path.dirname(os.path.abspath(__file__)))

from ldm.run.devices import register_resolver  # noqa: E402  (light: no torch)

register_resolver()  # ${ldm_gpu_jobs:N} of hydra/launcher=gpus, resolved before any job starts


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig):
    from ldm.run import runtime, schema

    schema.entry_check(cfg)  # threads=abc: one error line, before the thread setup reads it
    runtime.prepare_from_hydra(cfg.get("threads"), cfg.get("trainer"))  # threads, OpenMP waiting: before torch
    from ldm import cli  # after Hydra parsed the CLI: `--help` and `--cfg` stay fast

    return cli.train(cfg)


if __name__ == "__main__":
    from ldm.signals import guarded

    guarded(main)
