"""Image grids as PNG without torchvision."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ldm.utils.io import atomic_write


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    x = images.detach().float().cpu().clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 1, scale: int = 1,
              pad_value: int = 255) -> np.ndarray:
    """Tile (N, C, H, W) images in [-1, 1] into one (H', W', C) uint8 array, `nrow` images per row."""
    if images.ndim != 4:
        raise ValueError(f"make_grid expects (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"make_grid needs 1 or 3 channels, got {c}")
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = nrow
    nrows = max(1, math.ceil(n / ncol))
    tiles = to_uint8(images)
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        grid[y:y + h, x:x + w] = tiles[i]
    return grid


def auto_scale(image_size: int, target: int = 48) -> int:
    """Nearest-neighbour upscale factor that makes tiny images (8x8 digits) visible."""
    return max(1, target // max(1, image_size))


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Save an (H, W, C) uint8 array as PNG, atomically."""
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def label(grid: np.ndarray, cell: int, padding: int = 1, rows: Sequence[str] = (), cols: Sequence[str] = (),
          title: str = "") -> np.ndarray:
    """`grid` (from make_grid, cells `cell` px apart from `padding`) with row labels on the left, column labels
    on top and a title above, in PIL's built-in font (no font files needed)."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    text_w = lambda s: int(font.getlength(s)) if s else 0  # noqa: E731
    left = (max(map(text_w, rows)) + 6) if any(rows) else 0
    top = (14 if any(cols) else 0) + (14 if title else 0)
    h, w = grid.shape[:2]
    canvas = Image.new("RGB", (w + left, h + top), "white")
    canvas.paste(Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).convert("RGB"), (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((left + 2, 1), title, fill="black", font=font)
    for i, text in enumerate(cols):
        x = left + padding + i * (cell + padding) + max(0, (cell - text_w(text)) // 2)
        draw.text((x, top - 13), text, fill="black", font=font)
    for i, text in enumerate(rows):
        y = top + padding + i * (cell + padding) + max(0, cell // 2 - 6)
        draw.text((2, y), text, fill="black", font=font)
    return np.asarray(canvas)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, rows: Sequence[str] = (),
              cols: Sequence[str] = (), title: str = "") -> Path:
    """A grid of (N, C, H, W) images in [-1, 1] as PNG, upscaled when tiny, with optional labels and title."""
    scale = auto_scale(images.shape[-1])
    grid = make_grid(images, nrow=nrow, scale=scale)
    if rows or cols or title:
        grid = label(grid, images.shape[-1] * scale, rows=rows, cols=cols, title=title)
    return save_png(grid, path)
