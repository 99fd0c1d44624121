"""The image-classification task: cross-entropy training (optionally mixup/cutmix), loss and top-1 accuracy."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Iterator

import torch

from hfprune.study.recipe import StudyRecipe
from hfprune.train.sections import TrainingSection
from hfprune.data import ImageClassificationData
from hfprune.data.registry import load_image_classification
from hfprune.errors import HfpruneError
from hfprune.evaluation.classification import classification_loss, evaluate_classification
from hfprune.data.transforms import stratified_subset
from hfprune.train.trainer import LossFn, make_loader


def mix_batch(
    pixels: torch.Tensor, mixup: float, cutmix: float, switch_prob: float = 0.5
) -> tuple[torch.Tensor, float]:
    """Mixup or CutMix of a batch with its reverse (as timm's Mixup, batch mode, plain torch).

    With both on, each batch uses CutMix with probability ``switch_prob``. λ ~ Beta(α, α); for CutMix
    a box of area ≈ (1 − λ)·H·W is pasted from the reversed batch and λ is corrected to the pasted area.
    Returns the mixed images and λ (the weight of the original labels). Uses torch's global RNG.
    """
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand(()).item() < switch_prob)
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample().item())
    partner = pixels.flip(0)
    if not use_cutmix:
        return pixels * lam + partner * (1 - lam), lam
    height, width = pixels.shape[-2:]
    cut = (1 - lam) ** 0.5
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(0, height, ()).item()), int(torch.randint(0, width, ()).item())
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = pixels.clone()
    mixed[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
    return mixed, 1 - (y1 - y0) * (x1 - x0) / (height * width)


def mixed_classification_loss(model: torch.nn.Module, batch: dict, label_smoothing: float = 0.0,
                              mixup: float = 0.0, cutmix: float = 0.0) -> torch.Tensor:
    """Cross-entropy on a mixup/cutmix batch: λ·CE(y) + (1 − λ)·CE(y reversed), label smoothing kept."""
    pixels, labels = batch["pixel_values"], batch["labels"]
    mixed, lam = mix_batch(pixels, mixup, cutmix)
    logits = model(pixel_values=mixed).logits
    ce = torch.nn.functional.cross_entropy
    return lam * ce(logits, labels, label_smoothing=label_smoothing) + (1 - lam) * ce(
        logits, labels.flip(0), label_smoothing=label_smoothing)


def augment_batch(batch: dict, augment) -> dict:
    """The batch with its images augmented (on their device) by ``augment``."""
    return {**batch, "pixel_values": augment(batch["pixel_values"])}


def augmented_loss(model: torch.nn.Module, batch: dict, loss: LossFn, transform) -> torch.Tensor:
    """``loss`` on the batch as ``transform`` (e.g. :func:`augment_batch`) makes it."""
    return loss(model, transform(batch))


class ImageClassificationTask:
    """Cross-entropy training; loss and top-1 accuracy as metrics."""

    pruned_splits = ("train", "test")
    find_unused_parameters = False
    keeps_retrained = False
    one_device_trials = True
    DIRECTIONS = {"loss": False, "acc": True}

    @classmethod
    def from_recipe(cls, recipe: StudyRecipe, progress: bool = True,
                    calibration_samples: int = 128) -> "ImageClassificationTask":
        """The recipe's dataset, loaded as its ``data`` section says."""
        data = load_image_classification(
            recipe.data.dataset, path=recipe.data.path, image_size=recipe.data.image_size,
            train_limit=recipe.data.train_limit, test_limit=recipe.data.test_limit, limit_seed=recipe.seed,
            image_processor=recipe.data.image_processor or recipe.model.pretrained, augment=tuple(recipe.data.augment),
            num_workers=recipe.data.num_workers,
        )
        validation = None
        if recipe.data.validation_fraction:
            from hfprune.data.validation import hold_out

            data, validation = hold_out(data, recipe.data.validation_fraction, recipe.seed)
        return cls(data, recipe.evaluation.batch_size, calibration_samples=calibration_samples,
                   validation=validation)

    def __init__(self, data: ImageClassificationData, eval_batch_size: int = 1024, *, calibration_samples: int = 128,
                 validation=None):
        self.data = data
        self.calibration_samples = calibration_samples
        self.validation = validation  # held out from the train split (data.validation_fraction), or None
        self.name = data.name
        self.train_set = data.training_set  # evaluation reads data.train, never the augmented view
        self.eval_batch_size = eval_batch_size

    def loss_fn(self, section: TrainingSection | None = None) -> LossFn:
        """The training loss; under a ``section`` (training) batches are first augmented where the data says."""
        if section is None:
            return classification_loss
        loss, augment = self.pack_loss(section)
        return loss if augment is None else functools.partial(augmented_loss, loss=loss, transform=augment)

    def pack_loss(self, section: TrainingSection) -> tuple[LossFn, Callable[[dict], dict] | None]:
        """``loss_fn(section)`` split for packed training: the loss of an augmented batch, and the augmentation as
        a transform of a batch (None: none), which the packed engine draws from each job's own random stream."""
        if section.mixup or section.cutmix:
            loss = functools.partial(mixed_classification_loss, label_smoothing=section.label_smoothing,
                                     mixup=section.mixup, cutmix=section.cutmix)
        else:
            loss = functools.partial(classification_loss, label_smoothing=section.label_smoothing)
        augment = self.data.batch_augment
        return loss, (None if augment is None else functools.partial(augment_batch, augment=augment))

    def data_shape(self) -> tuple[int, int, int]:
        """(classes, channels, image size): what a model built for this data takes."""
        return self.data.num_labels, self.data.channels, self.data.image_size

    def example_input(self) -> torch.Tensor:
        """The shape of one input the models see ([1, C, H, W]), e.g. for the connectivity analysis of a trained
        model whose config does not give its image size (HF ResNet)."""
        return torch.zeros(1, self.data.channels, self.data.image_size, self.data.image_size)

    def calibration_batches(self, device: torch.device | None = None) -> Iterator[dict]:
        """Unaugmented batches of a fixed stratified subset of ``calibration_samples`` training images."""
        train = self.data.train
        keep = stratified_subset(train.labels.numpy(), self.calibration_samples, seed=0).tolist()
        subset = torch.utils.data.Subset(train, keep)
        for batch in make_loader(subset, self.eval_batch_size, shuffle=False, seed=0,
                                 batched=hasattr(train, "__getitems__")):
            yield {key: value.to(device) if device is not None else value for key, value in batch.items()}

    def evaluate(self, model: torch.nn.Module, split: str, workdir: Path | None = None) -> dict[str, float]:
        dataset = {"train": self.data.train, "test": self.data.test, "validation": self.validation}[split]
        if dataset is None:
            raise HfpruneError("this study has no validation split; set data.validation_fraction in the recipe")
        return evaluate_classification(model, dataset, self.eval_batch_size)

    def direction(self, metric: str) -> bool | None:
        return self.DIRECTIONS.get(metric)

    def selection_metric(self, record) -> str:
        return "final_test_acc"

    def save_companions(self, directory: Path) -> None:
        """Nothing: the classifiers' preprocessing is the dataset's, not a saved processor."""
