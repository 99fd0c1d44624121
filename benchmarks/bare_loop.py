"""The bare PyTorch retraining loop that benchmarks compare hfprune's trainer against."""

from __future__ import annotations

import torch


def masked_sgd_epochs(model, images, labels, masks: dict[str, torch.Tensor], optimizer, schedule,
                      batch_size: int, epochs: int) -> None:
    """Retrain ``model`` on shuffled batches (seed 0) with cross-entropy; ``masks`` (by parameter name, on the
    parameters' device) are multiplied into the gradients before and into the weights after every step."""
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator).to(images.device)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(model(pixel_values=images[index]).logits, labels[index])
            masked_sgd_step(loss, params, masks, optimizer, schedule)


def masked_sgd_step(loss: torch.Tensor, params: dict[str, torch.nn.Parameter], masks: dict[str, torch.Tensor],
                    optimizer, schedule) -> None:
    """One step of the bare loop: backward, masked gradients, optimizer and schedule step, masked weights."""
    loss.backward()
    with torch.no_grad():
        for name, keep in masks.items():
            params[name].grad.mul_(keep)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, keep in masks.items():
            params[name].mul_(keep)
