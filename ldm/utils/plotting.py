"""matplotlib without a screen (the Agg backend), and figures saved atomically: shared by every package that plots."""

from __future__ import annotations

from pathlib import Path

from ldm.utils.io import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: plotting is optional to everything else)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """`fig` as a PNG at `path` (temporary name, then rename), then closed."""
    plt = pyplot()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return out
