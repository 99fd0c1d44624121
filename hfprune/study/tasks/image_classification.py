"""Tasks: what a study trains on and how a model is scored. The runner knows only this interface."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Protocol

import torch

from hfprune.data import ImageClassificationData
from hfprune.evaluation.classification import classification_loss, evaluate_classification
from hfprune.config.recipe import TrainingSection
from hfprune.train.trainer import LossFn


class Task(Protocol):
    name: str
    train_set: torch.utils.data.Dataset
    pruned_splits: tuple[str, ...]  # the splits measured right after pruning, before retraining
    find_unused_parameters: bool  # some steps leave parameters without gradients (DDP must be told)
    keeps_retrained: bool  # retraining is costly: a trial saves its retrained model until it is recorded

    def loss_fn(self, section: TrainingSection | None = None) -> LossFn:
        """The training loss under ``section``'s label smoothing and batch mixing (None: plain)."""

    def evaluate(self, model: torch.nn.Module, split: str, workdir: Path | None = None) -> dict[str, float]:
        """Metrics of ``model`` on ``split`` ('train' or 'test'); keys include 'loss'. ``workdir`` keeps
        what an evaluation writes on its way (e.g. generated answers)."""

    def best_metric(self, record: dict) -> tuple[str, bool]:
        """The record column that ranks retrained models, and whether higher is better."""

    def save_companions(self, directory: Path) -> None:
        """Write what a saved model needs beside its weights (e.g. a processor) into ``directory``."""


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


class ImageClassificationTask:
    """Cross-entropy training; loss and top-1 accuracy as metrics."""

    pruned_splits = ("train", "test")
    find_unused_parameters = False
    keeps_retrained = False

    def __init__(self, data: ImageClassificationData, eval_batch_size: int = 1024):
        self.data = data
        self.name = data.name
        self.train_set = data.training_set  # evaluation reads data.train, never the augmented view
        self.eval_batch_size = eval_batch_size

    def loss_fn(self, section: TrainingSection | None = None) -> LossFn:
        if section is None:
            return classification_loss
        if section.mixup or section.cutmix:
            return functools.partial(mixed_classification_loss, label_smoothing=section.label_smoothing,
                                     mixup=section.mixup, cutmix=section.cutmix)
        return functools.partial(classification_loss, label_smoothing=section.label_smoothing)

    def evaluate(self, model: torch.nn.Module, split: str, workdir: Path | None = None) -> dict[str, float]:
        dataset = {"train": self.data.train, "test": self.data.test}[split]
        return evaluate_classification(model, dataset, self.eval_batch_size)

    def best_metric(self, record: dict) -> tuple[str, bool]:
        return "final_test_acc", True

    def save_companions(self, directory: Path) -> None:
        """Nothing: the classifiers' preprocessing is the dataset's, not a saved processor."""
