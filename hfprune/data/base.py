"""The in-memory form of an image-classification dataset that studies train on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch


class TensorImageSet(torch.utils.data.Dataset):
    """Images ``[N, C, H, W]`` (float32, normalised) and labels ``[N]`` (int64) held in memory.

    Indexing with a list or tensor of indices returns a whole batch at once, so a
    ``BatchSampler`` feeds it without per-sample collation.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images.float().contiguous()
        self.labels = labels.long().contiguous()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long)
        return {"pixel_values": self.images[index], "labels": self.labels[index]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self[indices]


@dataclass
class ImageClassificationData:
    """Train and test sets of one image-classification task."""

    name: str
    train: TensorImageSet
    test: TensorImageSet
    num_labels: int
    # training augmentation of a whole batch on its device (e.g. CIFAR's pad + crop + flip); None: none
    batch_augment: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    @property
    def training_set(self) -> torch.utils.data.Dataset:
        """What training iterates over (the train split, augmented where a dataset augments)."""
        return self.train
