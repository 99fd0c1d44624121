"""Losses and metrics of classifiers: image classifiers (cross-entropy over classes) and one-logit binary
classifiers (the sparse MLPs, BCE-with-logits), evaluated in eval mode and without gradients."""

from __future__ import annotations

from typing import Callable

import torch

from hfprune.errors import HfpruneError
from hfprune.train.trainer import make_loader

# (model, batch on the model's device) -> (summed loss, correct predictions, examples)
BatchScore = Callable[[torch.nn.Module, dict], tuple[float, int, int]]


def classification_loss(model: torch.nn.Module, batch: dict, label_smoothing: float = 0.0) -> torch.Tensor:
    logits = model(pixel_values=batch["pixel_values"]).logits
    return torch.nn.functional.cross_entropy(logits, batch["labels"], label_smoothing=label_smoothing)


def binary_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Mean BCE-with-logits of ``model(inputs=batch["inputs"]).logits`` against the 0/1 ``batch["labels"]``."""
    logits = model(inputs=batch["inputs"]).logits
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"].to(logits.dtype))


def _classes_score(model: torch.nn.Module, batch: dict) -> tuple[float, int, int]:
    logits, labels = model(pixel_values=batch["pixel_values"]).logits.float(), batch["labels"]
    loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
    return loss, int((logits.argmax(-1) == labels).sum().item()), len(labels)


def _binary_score(model: torch.nn.Module, batch: dict) -> tuple[float, int, int]:
    labels = batch["labels"].float().reshape(-1)
    logits = model(inputs=batch["inputs"]).logits.float().reshape(-1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum").item()
    return loss, int(((logits > 0).float() == labels).sum().item()), len(labels)


@torch.no_grad()
def evaluate_dataset(model: torch.nn.Module, dataset, batch_size: int, score: BatchScore) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``dataset``, batch by batch with ``score``, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct, count = 0.0, 0, 0
    for batch in make_loader(dataset, batch_size, shuffle=False, seed=0):
        batch_loss, batch_correct, batch_count = score(model, {key: value.to(device) for key, value in batch.items()})
        loss_sum, correct, count = loss_sum + batch_loss, correct + batch_correct, count + batch_count
    model.train(was_training)
    if not count:
        raise HfpruneError("nothing to evaluate: the split is empty; use more data (a larger data.train_limit / "
                           "--train-limit, or a smaller validation fraction)")
    return {"loss": loss_sum / count, "acc": correct / count}


def evaluate_classification(model: torch.nn.Module, dataset, batch_size: int = 1024) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy over ``dataset`` (no augmentation)."""
    return evaluate_dataset(model, dataset, batch_size, _classes_score)


def evaluate_binary(model: torch.nn.Module, dataset, batch_size: int = 4096) -> dict[str, float]:
    """Mean BCE-with-logits and accuracy (predicted 1 iff logit > 0) over ``dataset``'s ``{"inputs", "labels"}``."""
    return evaluate_dataset(model, dataset, batch_size, _binary_score)
