"""A folder of images as model inputs, prepared by a model's image processor (calibration of vision encoders)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from hfprune.errors import HfpruneError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_files(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, by suffix), in sorted order; an HfpruneError when none."""
    found = sorted(path for path in Path(folder).rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise HfpruneError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under '{folder}'")
    return found


class ImageFiles(torch.utils.data.Dataset):
    """Image files read as RGB and prepared by ``image_processor``: ``__getitems__`` is a batch of
    ``pixel_values``."""

    def __init__(self, paths: Sequence[Path], image_processor):
        self.paths = list(paths)
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, path: Path):
        from PIL import Image

        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError as error:
            raise HfpruneError(f"cannot read image '{path}': {error}") from None

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        images = [self._image(self.paths[index]) for index in indices]
        return {"pixel_values": self.image_processor(images=images, return_tensors="pt")["pixel_values"]}
