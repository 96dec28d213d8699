"""A directory of images; class sub-folders give labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ldm.data.base import InMemoryImageDataModule, resize_center_crop
from ldm.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")


class FolderDataModule(InMemoryImageDataModule):
    """PNG/JPEG files under `root` (recursively); `root/<class>/...` layouts get one label per class folder.

    Images are converted to `channels` (1: grayscale, 3: RGB), short side resized to `image_size`,
    centre-cropped, and held in memory.
    """

    def __init__(self, root: str, image_size: int = 32, channels: int = 3, **kwargs) -> None:
        super().__init__(image_size=image_size, channels=channels, **kwargs)
        self.root = Path(root).expanduser()

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            what = "is not a directory" if self.root.exists() else "does not exist"
            raise DataError(f"data.root={self.root} {what}: point data.root at a folder of PNG/JPEG images")
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
        if not files:
            raise DataError(f"data.root={self.root} holds no PNG/JPEG images ({', '.join(EXTENSIONS)}); "
                            f"add images or point data.root elsewhere")
        return files

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        files = self.files()
        # Labels only when every image sits in a class folder directly below root.
        classes = sorted({p.relative_to(self.root).parts[0] for p in files if len(p.relative_to(self.root).parts) > 1})
        labelled = all(len(p.relative_to(self.root).parts) > 1 for p in files)
        class_index = {c: i for i, c in enumerate(classes)}
        self.class_names = classes if labelled else []
        mode = "L" if self.channels == 1 else "RGB"
        images, labels, bad = [], [], []
        for p in files:
            try:
                with Image.open(p) as im:
                    arr = np.asarray(im.convert(mode), dtype=np.float32)
            except Exception as e:  # PIL raises many types for corrupt files
                bad.append((p, e))
                continue
            if arr.ndim == 2:
                arr = arr[..., None]
            x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0
            images.append(resize_center_crop(x, self.image_size))
            labels.append(class_index[p.relative_to(self.root).parts[0]] if labelled else -1)
        if bad:
            first, err = bad[0]
            raise DataError(f"{len(bad)} of {len(files)} image files under data.root={self.root} could not be "
                            f"read (first: {first.relative_to(self.root)}: {type(err).__name__}); "
                            f"remove or replace them")
        return torch.cat(images), torch.tensor(labels, dtype=torch.long)
