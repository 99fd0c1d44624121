"""Retraining a structured candidate as the physically pruned model instead of the masked dense-shaped one.

A structured mask removes whole units (filters with their BN entries and the next layer's input channels,
heads, neurons). With the pruned units held at zero, the masked model computes exactly what the physically
pruned model computes, and their gradients on the kept weights are the same: SGD with momentum and weight
decay (and gradient clipping: the pruned gradients are zero) moves the kept weights identically. The smaller
model costs fewer FLOPs and no mask enforcement. ``retrain.physical: false`` keeps masked retraining.
"""

from __future__ import annotations

from typing import Callable

from transformers import PreTrainedModel

from hfprune.study.oracle.recipe import RetrainSection

Shrink = Callable[[PreTrainedModel], PreTrainedModel]


def retraining_shrink(plan, spec, retrain: RetrainSection) -> Shrink | None:
    """How the trial ``spec`` turns its pruned model into the model it retrains: the plan's physical surgery
    (``retrain.physical`` true or unset, where the plan can shrink), or None (masked retraining)."""
    if retrain.physical is False:
        return None
    return plan.shrinker(spec)


def physical_facts(model: PreTrainedModel, shrunk: bool) -> dict[str, object]:
    """What a record keeps about the retrained model's form: physical or masked, and its parameter count."""
    return {"retrain_form": "physical" if shrunk else "masked",
            "retrain_params": sum(param.numel() for param in model.parameters())}
