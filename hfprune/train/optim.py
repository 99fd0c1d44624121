"""Optimisers and learning-rate schedules from a recipe's training section."""

from __future__ import annotations

import math

import torch
from transformers import get_cosine_schedule_with_warmup

from hfprune.train.sections import OptimizerSection, ScheduleSection


def build_optimizer(parameters, section: OptimizerSection) -> torch.optim.Optimizer:
    params = [p for p in parameters if p.requires_grad]
    if section.name == "sgd":
        return torch.optim.SGD(
            params, lr=section.lr, momentum=section.momentum, nesterov=section.nesterov,
            weight_decay=section.weight_decay,
        )
    optimizer_class = torch.optim.Adam if section.name == "adam" else torch.optim.AdamW
    return optimizer_class(params, lr=section.lr, betas=section.betas, weight_decay=section.weight_decay,
                           fused=can_fuse(params) or None)


def can_fuse(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused (single-kernel) Adam can take these parameters: floating point, on the CPU or a GPU.

    Fused Adam is the fastest on both, and on the CPU it is also the one whose square root is not slowed down
    by the exact zeros that pruned weights keep in the second moments (the default multi-tensor one is ~2x
    slower per step there with 44% of the weights pruned). The parameters may move to the GPU after this.
    """
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def build_schedule(
    optimizer: torch.optim.Optimizer, section: ScheduleSection, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A schedule stepped once per optimiser step; epoch milestones become step milestones."""
    warmup_steps = round(section.warmup_epochs * steps_per_epoch)
    if section.name == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup_steps, max(1, epochs * steps_per_epoch))
    milestones = [m * steps_per_epoch for m in section.milestones] if section.name == "multistep" else []
    factors = section.factors()

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        return warm * math.prod(f for f, m in zip(factors, milestones) if step >= m)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
