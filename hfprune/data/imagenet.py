"""ImageNet-1K (``ILSVRC/imagenet-1k`` schema) through ``datasets``, decoded lazily, preprocessed
like the model's image processor, with the paper's retraining augmentations in plain torch/PIL.

Schema: ``image`` (Image) and ``label`` (ClassLabel, 1000 classes); splits ``train`` and
``validation`` (the Hub's ``test`` split has no labels, so studies test on ``validation``).
``data.path`` is a ``save_to_disk`` copy or a download of the Hub repository.

Preprocessing follows the model's image processor (``AutoImageProcessor``; for ViT: resize to
``size`` with its resampling, rescale to [0, 1], normalise with ``image_mean``/``image_std``).
Training images may instead get a random resized crop (scale 0.08–1, aspect 3/4–4/3, as
torchvision/timm) and a horizontal flip with probability 0.5, drawn from torch's global RNG (seeded
by the trainer, so a seed gives the same augmentations on CPU). ``data.num_workers`` decodes in DataLoader
workers (pinned memory, persistent, seeded per worker: :mod:`hfprune.data.workers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from hfprune.data.base import ImageClassificationData
from hfprune.data.transforms import stratified_subset
from hfprune.errors import HfpruneError

AUGMENTATIONS = ("random_resized_crop", "hflip")


@dataclass(frozen=True)
class Preprocessing:
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resample: int = 2  # PIL.Image.BILINEAR


def preprocessing_from(source: str | None, image_size: int) -> Preprocessing:
    """Mean, std and resampling of ``source``'s image processor (ViT defaults when ``source`` is None
    or has no processor); the output size is ``image_size``."""
    mean, std, resample = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 2
    if source is not None:
        from transformers import AutoImageProcessor
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the PIL fallback (no torchvision here) is expected
        try:
            processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError):
            processor = None
        finally:
            hf_logging.set_verbosity(verbosity)
        if processor is not None:
            mean = tuple(getattr(processor, "image_mean", None) or mean)
            std = tuple(getattr(processor, "image_std", None) or std)
            resample = int(getattr(processor, "resample", None) or resample)
    return Preprocessing((image_size, image_size), mean, std, resample)


def random_resized_crop_box(width: int, height: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop, as torchvision's RandomResizedCrop draws it."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(*scale).item()
        aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,)).item())
            left = int(torch.randint(0, width - w + 1, (1,)).item())
            return left, top, left + w, top + h
    in_ratio = width / height  # fallback: central crop
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class HFImageSet(torch.utils.data.Dataset):
    """Items ``{"pixel_values": [3, H, W], "labels": int}`` decoded from a ``datasets.Dataset`` on access."""

    def __init__(self, dataset, labels: np.ndarray, prep: Preprocessing, augment: Sequence[str] = (),
                 image_column: str = "image", num_workers: int = 0):
        self.dataset, self.prep, self.augment, self.image_column = dataset, prep, tuple(augment), image_column
        self.num_workers = num_workers  # DataLoader workers that decode it (hfprune.data.workers)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self._mean = torch.tensor(prep.mean).view(-1, 1, 1)
        self._std = torch.tensor(prep.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def with_augment(self, augment: Sequence[str]) -> "HFImageSet":
        return HFImageSet(self.dataset, self.labels.numpy(), self.prep, augment, self.image_column, self.num_workers)

    def transform(self, image) -> torch.Tensor:
        image = image.convert("RGB")
        box = None
        if "random_resized_crop" in self.augment:
            box = random_resized_crop_box(*image.size)
        image = image.resize((self.prep.size[1], self.prep.size[0]), resample=self.prep.resample, box=box)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1).div_(255.0)
        if "hflip" in self.augment and torch.rand(()).item() < 0.5:
            x = x.flip(-1)
        return (x - self._mean) / self._std

    def __getitem__(self, index: int) -> dict:
        image = self.dataset[int(index)][self.image_column]
        return {"pixel_values": self.transform(image), "labels": self.labels[index]}


@dataclass
class LazyImageClassificationData(ImageClassificationData):
    """Splits decoded on access; ``train_augmented`` is what training iterates over."""

    train_augmented: HFImageSet | None = None
    image_size_: int = 224

    @property
    def channels(self) -> int:
        return 3

    @property
    def image_size(self) -> int:
        return self.image_size_

    @property
    def training_set(self) -> HFImageSet:
        return self.train if self.train_augmented is None else self.train_augmented


def load_lazy_image_classification(
    spec, path: str | None, image_size: int, train_limit: int | None, test_limit: int | None,
    limit_seed: int, image_processor: str | None = None, augment: Sequence[str] = (), num_workers: int = 0,
) -> LazyImageClassificationData:
    """The train and ``spec.test_split`` splits of a Hub dataset (or local copy), decoded lazily (by
    ``num_workers`` DataLoader workers, seeded per worker; 0 = in the training process)."""
    from hfprune.data.hub import _check_schema, _load_dataset_dict

    unknown = [name for name in augment if name not in AUGMENTATIONS]
    if unknown:
        raise HfpruneError(f"unknown augmentation '{unknown[0]}'; choose from: {', '.join(AUGMENTATIONS)}")
    source = f"data.path '{path}'" if path is not None else f"'{spec.hub_id}'"
    dataset_dict = _load_dataset_dict(spec.name, spec.hub_id, path, spec.hub_config)
    splits = ("train", spec.test_split)
    missing = [s for s in splits if s not in dataset_dict]
    if missing:
        raise HfpruneError(
            f"dataset '{spec.name}' ({source}): no split {', '.join(repr(s) for s in missing)} "
            f"(splits: {', '.join(dataset_dict)}); a copy needs the splits {' and '.join(splits)}"
        )
    prep = preprocessing_from(image_processor, image_size)
    sets = {}
    for split, limit in zip(splits, (train_limit, test_limit)):
        ds = dataset_dict[split]
        _check_schema(spec.name, source, split, ds, spec.image_column, spec.label_column)
        labels = ds.with_format("arrow", columns=[spec.label_column])[:][spec.label_column].to_numpy().astype(np.int64)
        keep = stratified_subset(labels, limit, limit_seed)
        if len(keep) < len(labels):
            ds, labels = ds.select(keep), labels[keep]
        if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_labels):
            raise HfpruneError(
                f"dataset '{spec.name}' ({source}): split '{split}' has labels outside 0..{spec.num_labels - 1}"
            )
        sets[split] = HFImageSet(ds, labels, prep, image_column=spec.image_column, num_workers=num_workers)
    train = sets["train"]
    return LazyImageClassificationData(
        name=spec.name, train=train, test=sets[spec.test_split], num_labels=spec.num_labels,
        train_augmented=train.with_augment(augment) if augment else None, image_size_=image_size,
    )
