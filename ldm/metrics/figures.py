"""Evaluation figures: latent histograms against N(0, 1) and the generated class histogram (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from ldm.utils.plotting import pyplot, save_figure


def latent_histograms(scaled: torch.Tensor, path: Path, title: str = "") -> Path:
    """One panel per latent channel: histogram of scaled latents with the N(0, 1) density on top."""
    plt = pyplot()
    c = scaled.shape[1]
    cols = min(4, c)
    rows = math.ceil(c / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    grid = torch.linspace(-4, 4, 200)
    pdf = torch.exp(-grid ** 2 / 2) / math.sqrt(2 * math.pi)
    for i, ax in enumerate(axes.flat):
        if i >= c:
            ax.axis("off")
            continue
        v = scaled[:, i].flatten().double()
        ax.hist(v.clamp(-6, 6).numpy(), bins=60, range=(-6, 6), density=True, alpha=0.7, label="latents")
        ax.plot(grid.numpy(), pdf.numpy(), "k-", lw=1.2, label="N(0, 1)")
        ax.set_title(f"channel {i}: mean {v.mean():.2f}, std {v.std():.2f}", fontsize=9)
        ax.set_xlim(-6, 6)
    axes.flat[0].legend(fontsize=8, loc="upper right", framealpha=0.6)
    if title:
        fig.suptitle(title, fontsize=10, y=1.04)
    return save_figure(fig, path)


def class_histogram_plot(generated: torch.Tensor, path: Path, real: Optional[torch.Tensor] = None,
                         names: Optional[list[str]] = None, title: str = "") -> Path:
    """Bars: fraction of generated samples per predicted class (and of real test images), uniform line."""
    plt = pyplot()
    k = len(generated)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * k + 2), 3))
    x = torch.arange(k).numpy()
    width = 0.4 if real is not None else 0.8
    ax.bar(x - (width / 2 if real is not None else 0), generated.numpy(), width, label="generated")
    if real is not None:
        ax.bar(x + width / 2, real.numpy(), width, label="real test", alpha=0.7)
    ax.axhline(1 / k, color="k", ls="--", lw=1, label="uniform")
    ax.axhline(0.5 / k, color="r", ls=":", lw=1, label="covered threshold")
    ax.set_xticks(x, labels=names if names and len(names) == k else [str(i) for i in range(k)],
                  rotation=45 if names and max(map(len, names)) > 3 else 0)
    ax.set_xlabel("class (evaluator prediction)")
    ax.set_ylabel("fraction")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def channel_histogram_plot(generated: torch.Tensor, path: Path, real: Optional[torch.Tensor] = None,
                           names: Optional[list[str]] = None, channel_names: Optional[list[str]] = None,
                           modes: Optional[torch.Tensor] = None, real_modes: Optional[torch.Tensor] = None,
                           title: str = "") -> Path:
    """Stacked data: one panel per channel (fraction of samples per predicted class of that channel, generated
    and real test) and, with `modes`, the mode histogram sorted from the most to the least frequent mode."""
    plt = pyplot()
    c, k = generated.shape
    panels = c + (modes is not None)
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 2.8), squeeze=False)
    x = torch.arange(k).numpy()
    width = 0.4 if real is not None else 0.8
    labels = names if names and len(names) == k else [str(i) for i in range(k)]
    for i in range(c):
        ax = axes[0, i]
        ax.bar(x - (width / 2 if real is not None else 0), generated[i].numpy(), width, label="generated")
        if real is not None:
            ax.bar(x + width / 2, real[i].numpy(), width, label="real test", alpha=0.7)
        ax.axhline(1 / k, color="k", ls="--", lw=1, label="uniform")
        ax.set_xticks(x, labels=labels)
        ax.set_title(channel_names[i] if channel_names and i < len(channel_names) else f"channel {i}", fontsize=9)
        ax.set_xlabel("class (evaluator prediction)", fontsize=8)
    axes[0, 0].set_ylabel("fraction")
    if modes is not None:
        ax = axes[0, c]
        m = len(modes)
        ax.plot(range(m), modes.sort(descending=True).values.numpy(), lw=1.2, label="generated")
        if real_modes is not None:
            ax.plot(range(m), real_modes.sort(descending=True).values.numpy(), lw=1.2, alpha=0.7, label="real test")
        ax.axhline(1 / m, color="k", ls="--", lw=1, label="uniform")
        ax.set_title(f"{m} modes, most to least frequent", fontsize=9)
        ax.set_xlabel("mode rank", fontsize=8)
    axes[0, panels - 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if title:
        fig.suptitle(title, fontsize=10, y=1.04)
    return save_figure(fig, path)
