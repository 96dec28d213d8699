"""The composed config as a tree at the start of a run (after lightning-hydra-template's `print_config_tree`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

ORDER = ("data", "backbone", "autoencoder", "diffusion", "sampler", "metrics", "stage1", "stage2", "trainer",
         "logger", "callbacks", "paths")  # the rest follows in config order


def print_config_tree(cfg: DictConfig, save_to: Optional[Path] = None) -> str:
    """Print the resolved config (without the hydra node) as a rich tree; also write it to `save_to`."""
    import rich
    import rich.syntax
    import rich.tree
    from rich.console import Console

    tree = rich.tree.Tree("CONFIG", guide_style="dim")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER and k != "hydra"]
    for key in keys:
        branch = tree.add(key, style="bold")
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    rich.print(tree)
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(tree)
    text = console.export_text()
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_text(text)
    return text
