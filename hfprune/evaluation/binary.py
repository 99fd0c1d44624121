"""Loss and accuracy of a one-logit binary classifier (the sparse MLPs), in eval mode and without gradients."""

from __future__ import annotations

import torch

from hfprune.train.trainer import make_loader


def binary_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Mean BCE-with-logits of ``model(inputs=batch["inputs"]).logits`` against the 0/1 ``batch["labels"]``."""
    logits = model(inputs=batch["inputs"]).logits
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"].to(logits.dtype))


@torch.no_grad()
def evaluate_binary(model: torch.nn.Module, dataset, batch_size: int = 4096) -> dict[str, float]:
    """Mean BCE-with-logits and accuracy (predicted 1 iff logit > 0) over ``dataset``'s ``{"inputs", "labels"}``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct, count = 0.0, 0, 0
    for batch in make_loader(dataset, batch_size, shuffle=False, seed=0):
        inputs, labels = batch["inputs"].to(device), batch["labels"].to(device).float().reshape(-1)
        logits = model(inputs=inputs).logits.float().reshape(-1)
        loss_sum += torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum").item()
        correct += ((logits > 0).float() == labels).sum().item()
        count += len(labels)
    model.train(was_training)
    return {"acc": correct / count, "loss": loss_sum / count}
