"""CIFAR-10/100 facts and the standard CIFAR training augmentation, done on whole batches on the device.

Hub schemas (``datasets``): ``uoft-cs/cifar10`` (config ``plain_text``) has ``img`` (Image, 32×32 RGB) and
``label`` (ClassLabel, 10); ``uoft-cs/cifar100`` (config ``cifar100``) has ``img``, ``fine_label`` (ClassLabel,
100; the target) and ``coarse_label`` (20 superclasses); both have splits ``train`` (50,000) and ``test`` (10,000).

The augmentation is torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` on the *normalised*
batch: the zero padding of the raw image becomes ``-mean/std`` per channel, so results equal augmenting the raw
image first and normalising after. Offsets and flips come from torch's RNG on the batch's device (the trainer
seeds it), so a seed gives the same augmentations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

# Per-channel mean and std of the train split's [0, 1] pixels (50,000 images each).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

BATCHED_AUGMENTATIONS = ("pad_crop", "hflip")


def pad_crop_flip(pixels: torch.Tensor, fill: torch.Tensor, pad: int = 4, crop: bool = True,
                  flip: bool = True) -> torch.Tensor:
    """Each image of ``pixels [N, C, H, W]`` padded by ``pad`` with ``fill [C]``, randomly cropped back to H×W
    (offsets uniform in 0..2·pad) and flipped left-right with probability 0.5; one gather for the batch."""
    n, channels, height, width = pixels.shape
    device = pixels.device
    if crop and pad > 0:
        padded = fill.to(device, pixels.dtype).view(1, channels, 1, 1).expand(
            n, channels, height + 2 * pad, width + 2 * pad).clone()
        padded[:, :, pad:pad + height, pad:pad + width] = pixels
        top = torch.randint(0, 2 * pad + 1, (n,), device=device)
        left = torch.randint(0, 2 * pad + 1, (n,), device=device)
    else:
        padded = pixels
        top = left = torch.zeros(n, dtype=torch.long, device=device)
    cols = torch.arange(width, device=device).expand(n, width)
    if flip:
        flipped = torch.rand(n, device=device) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(-1), cols)
    rows = top[:, None] + torch.arange(height, device=device)  # [N, H]
    cols = left[:, None] + cols  # [N, W]
    batch = torch.arange(n, device=device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class BatchAugmentation:
    """The recipe's batched training augmentations (``data.augment``) for normalised images."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int = 4

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        fill = -torch.tensor(self.mean) / torch.tensor(self.std)  # a zero pixel, normalised
        return pad_crop_flip(pixels, fill, self.pad, crop="pad_crop" in self.names, flip="hflip" in self.names)


def batch_augmentation(names: Sequence[str], mean: Sequence[float], std: Sequence[float]) -> BatchAugmentation | None:
    """The augmentation of ``names`` (None when empty); the caller has checked the names."""
    return BatchAugmentation(tuple(names), tuple(mean), tuple(std)) if names else None
